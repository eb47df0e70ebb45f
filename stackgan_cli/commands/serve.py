"""``stackgan serve``: a local web page for trying prompts and browsing runs."""

from __future__ import annotations

from typing import Annotated

import typer

from stackgan_cli.commands.options import (
    CkptOption,
    DamsmOption,
    DeviceOption,
    TextEncoderOption,
    VocabularyOption,
)
from stackgan_cli.devices import Device


def serve(
    ckpt: CkptOption = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. Anything but the loopback makes the page reachable "
            "from the network.",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")
    ] = 8000,
    text_encoder: TextEncoderOption = None,
    damsm: DamsmOption = None,
    vocabulary: VocabularyOption = None,
    device: DeviceOption = Device.auto,
) -> None:
    """Open a web page to type captions, generate images and browse the runs.

    The page and its JSON API (POST /api/generate, GET /api/runs, GET /api/health) run on
    this machine only unless --host says otherwise. Needs the optional web packages:
    pip install "stackgan-cli\\[serve]".

    Examples:

      stackgan serve --ckpt s1.pt

      stackgan serve --port 8080

      stackgan serve --ckpt netG_210000.pth --text-encoder cub

      stackgan serve --ckpt bird_AttnGAN2.pth --damsm DAMSMencoders/bird --vocabulary
      captions.pickle
    """
    from stackgan_cli.serve.server import serve as run_server

    run_server(
        ckpt,
        host=host,
        port=port,
        device=device.value,
        text_encoder=text_encoder,
        damsm=damsm,
        vocabulary=vocabulary,
    )
