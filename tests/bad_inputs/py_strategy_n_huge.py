from tts.strategies.self_consistency import SelfConsistency
SelfConsistency(n=10**9)
