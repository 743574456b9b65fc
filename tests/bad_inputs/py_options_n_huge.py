from tts.errors import parse_options
from tts.strategies.self_consistency import SelfConsistencyOptions
parse_options(SelfConsistencyOptions, {'n': 10**23}, where='strategy self_consistency')
