"""Shared by the ``stackgan serve`` tests: tiny generator files and a live server in a thread."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import torch
from torch import nn

from stackgan_cli.generator_file import save_generator_file
from stackgan_cli.models import ModelConfig, Stage1Generator, Stage2Generator
from stackgan_cli.models.generator_v2 import StackGANv2Generator
from stackgan_cli.text import train_text_encoder

TINY = ModelConfig(gf_dim=8, df_dim=8, z_dim=8, condition_dim=4, r_num=1, text_dim=16)
TINY_V2 = ModelConfig(gf_dim=8, df_dim=8, z_dim=8, condition_dim=4, r_num=1, text_dim=16)
CAPTIONS = [
    f"a {colour} {shape} on a plain background"
    for colour in ("red", "blue", "green", "yellow")
    for shape in ("circle", "square", "triangle")
]


def _lively(generator: nn.Module) -> nn.Module:
    """Weights that keep unit variance through the layers, so that a random generator in eval
    mode draws visibly different images for different inputs (the official init gives grey)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.normal_(0.0, 1.5 / module.weight[0].numel() ** 0.5)
    return generator.eval()


def write_attngan_file(root: Path) -> Path:
    """A tiny three-branch AttnGAN generator file whose DAMSM text encoder knows CAPTIONS'
    words (random weights: enough for attention maps to vary)."""
    import dataclasses

    from stackgan_cli.models import AttnGANGenerator, DAMSMTextEncoder
    from stackgan_cli.text.damsm_text import DAMSMText
    from stackgan_cli.text.words import WordVocabulary

    cfg = dataclasses.replace(
        ModelConfig.preset("birds-attngan"),
        text_dim=16, word_dim=8, gf_dim=4, df_dim=4, z_dim=8, condition_dim=4, r_num=1,
    )  # fmt: skip
    torch.manual_seed(0)
    vocabulary = WordVocabulary.build(CAPTIONS)
    text = DAMSMText(DAMSMTextEncoder(cfg, len(vocabulary)), vocabulary, cfg)
    path = root / "attngan.pt"
    save_generator_file(
        path, _lively(AttnGANGenerator(cfg)), cfg, family="attngan", text_encoder=text,
        dataset="shapes", epoch=1,
    )  # fmt: skip
    return path


def write_generator_files(root: Path) -> dict[int | str, Path]:
    """Tiny generator files with a briefly trained text encoder: Stage I (key 1), Stage II
    (key 2) and a three-branch StackGAN-v2 tree (key "v2")."""
    generator = torch.Generator().manual_seed(0)
    captions = [CAPTIONS[i : i + 2] for i in range(0, len(CAPTIONS), 2)]
    embeddings = torch.randn(len(captions), 2, TINY.text_dim, generator=generator)
    encoder, _ = train_text_encoder(
        captions[:4], embeddings[:4], captions[4:], embeddings[4:], seed=0, epochs=1, progress=False
    )
    torch.manual_seed(0)
    files = {1: root / "s1.pt", 2: root / "s2.pt"}
    for stage, network in ((1, Stage1Generator(TINY)), (2, Stage2Generator(TINY))):
        save_generator_file(
            files[stage],
            _lively(network),
            TINY,
            family=f"v1-stage{stage}",
            text_encoder=encoder,
            dataset="shapes",
            epoch=3,
        )
    files["v2"] = root / "v2.pt"
    save_generator_file(
        files["v2"],
        _lively(StackGANv2Generator(TINY_V2)),
        TINY_V2,
        family="v2",
        text_encoder=encoder,
        dataset="shapes",
        epoch=3,
    )
    return files


class LiveServer:
    """``app`` served by uvicorn on 127.0.0.1 in a background thread, as ``stackgan serve``
    runs it (its connection limits, :func:`uvicorn_options`, which ``options`` may replace);
    ``with LiveServer(app) as server: server.url``."""

    def __init__(self, app, **options) -> None:
        import uvicorn

        from stackgan_cli.serve.server import uvicorn_options

        # The socket is bound here and handed to uvicorn, so no other process can take the
        # port between choosing it and serving on it.
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            **{**uvicorn_options(), **options},
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()
