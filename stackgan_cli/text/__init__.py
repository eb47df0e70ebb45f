"""Free text -> caption embeddings: the text encoder that lets ``generate`` take any sentence.

``train_text_encoder`` learns it from a dataset's (caption, embedding) pairs; ``TextEncoder``
encodes prompts and saves itself as a plain dict; ``normalize_prompt`` checks and normalises
one prompt.
"""

from stackgan_cli.text.encoder import TextEncoder, TextEncoderConfig
from stackgan_cli.text.tokenize import MAX_TOKENS, normalize_prompt
from stackgan_cli.text.training import train_text_encoder

__all__ = [
    "MAX_TOKENS",
    "TextEncoder",
    "TextEncoderConfig",
    "normalize_prompt",
    "train_text_encoder",
]
