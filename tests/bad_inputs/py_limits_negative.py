from tts.limits import Limits
from tts.errors import parse_options
parse_options(Limits, {'max_calls': -1}, where='budget')
