from tts.errors import parse_options
from tts.strategies.self_consistency import SelfConsistencyOptions
parse_options(SelfConsistencyOptions, {'temperature': 0.5})
