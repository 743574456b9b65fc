import pathlib
from tts.config import load_pipeline
load_pipeline(pathlib.Path(__file__).with_name('pipeline_empty.yaml'))
