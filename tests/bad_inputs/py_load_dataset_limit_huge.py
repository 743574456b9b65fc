from tts import load_dataset
load_dataset('larger', limit=10**11)
