from tts.strategies.refine import Refine
Refine(rounds=True)
