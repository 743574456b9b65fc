from tts import SamplingParams
SamplingParams(temprature=0.5)
