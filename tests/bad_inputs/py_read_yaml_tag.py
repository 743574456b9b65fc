from tts.config import read_yaml
read_yaml('a: !!python/object:os.system {}', 'inline.yaml')
