from tts.config import parse_pipeline
parse_pipeline({'backend': {'name': 'fake', 'pricing': {'prompt': 1, 'completion': 1, 'cached': 0.1}}})
