import pathlib
from tts import load_study
load_study(pathlib.Path(__file__).with_name('study_n_values_huge.yaml'))
