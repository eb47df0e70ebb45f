"""Shared fixtures: every test gets its own empty cache; real data is used when present."""

from pathlib import Path

import pytest
from disk_helpers import tmpfs  # noqa: F401  (a fixture for the tests that fill a disk)
from training_helpers import write_tiny_prepared

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch) -> Path:
    """Point STACKGAN_HOME at a fresh folder so no test touches the user's cache."""
    home = tmp_path_factory.mktemp("stackgan_home")
    monkeypatch.setenv("STACKGAN_HOME", str(home))
    monkeypatch.delenv("STACKGAN_MIRROR", raising=False)
    return home


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present beside the checkout")
    return SHARED_DATA


SHAPES_FIXTURE_IMAGES = 80
"""Images in the session's shared shapes dataset (60 train / 20 test)."""
SHAPES_FIXTURE_TEXT_EPOCHS = 1
"""Text-encoder epochs for it: a working (if rough) encoder in a few seconds."""


@pytest.fixture(scope="session")
def prepared_shapes_root(tmp_path_factory) -> Path:
    """A cache root, made once per session, holding a tiny prepared shapes dataset at
    ``<root>/datasets/shapes/prepared`` (80 images: 60 train / 20 test, seed 0, with a briefly
    trained text encoder). Read-only: use ``shapes_dataset`` in tests."""
    from stackgan_cli.data.prepare import prepare_shapes

    root = tmp_path_factory.mktemp("prepared_shapes_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STACKGAN_HOME", str(root))
        prepare_shapes(
            images=SHAPES_FIXTURE_IMAGES,
            seed=0,
            workers=0,
            text_encoder_epochs=SHAPES_FIXTURE_TEXT_EPOCHS,
        )
    return root


@pytest.fixture
def shapes_dataset(prepared_shapes_root, isolated_cache) -> Path:
    """The session's prepared shapes dataset, made available as ``shapes`` in this test's own
    cache (so ``--dataset shapes`` and ``load_prepared("shapes")`` work); returns its prepared
    folder. Folders are real and files are symlinks, so a test that re-prepares or deletes it
    changes only its own copy."""
    source = prepared_shapes_root / "datasets" / "shapes" / "prepared"
    target = isolated_cache / "datasets" / "shapes" / "prepared"
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.symlink_to(path)
    return target


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> Path:
    """A random Inception-v3 weights file with exactly torch-fidelity's keys and shapes,
    scaled (Kaiming init) so its features and logits are far from zero: offline evaluation."""
    import io

    import torch
    from torch import nn
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class RandomInception(FeatureExtractorInceptionV3):
        """torch-fidelity's network class, left with its random initialisation."""

        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    torch.manual_seed(0)
    net = RandomInception("inception-v3-compat", ["2048"], feature_extractor_weights_path=empty)
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    nn.init.normal_(net.fc.weight, std=0.05)
    path = tmp_path_factory.mktemp("inception") / "rand.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def tiny_dataset(isolated_cache) -> str:
    """The name of a tiny prepared dataset (16 train / 4 test random images, 16-d embeddings)
    in this test's cache."""
    from stackgan_cli import paths

    write_tiny_prepared(paths.prepared_dir("tiny"))
    return "tiny"
