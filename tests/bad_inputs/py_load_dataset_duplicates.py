import pathlib
from tts import load_dataset
load_dataset(str(pathlib.Path(__file__).with_name('dataset_duplicate_ids.jsonl')))
