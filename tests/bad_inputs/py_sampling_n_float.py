from tts import SamplingParams
SamplingParams(n=2.5)
