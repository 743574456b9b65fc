from tts import SamplingParams
SamplingParams(n=99999999999999999999999)
