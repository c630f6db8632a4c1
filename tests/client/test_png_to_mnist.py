"""Pictures of digits of any size and colours become MNIST-like 28x28 inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from mnistctl.images import read_image


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(image.shape)
    return float((rows * image).sum() / image.sum()), float((cols * image).sum() / image.sum())


def drawn_digit(
    text: str, path: Path, mode: str = "RGB", background: object = "white", ink: object = "black"
) -> Path:
    """`text` drawn large and off-centre with PIL's own font, saved as PNG."""
    picture = Image.new(mode, (640, 480), background)
    ImageDraw.Draw(picture).text((60, 40), text, fill=ink, font=ImageFont.load_default(size=320))
    picture.save(path)
    return path


def test_a_large_dark_on_light_digit_becomes_light_on_dark_fitted_and_centred(tmp_path: Path) -> None:
    image = read_image(drawn_digit("7", tmp_path / "seven.png")).reshape(28, 28)

    assert image.dtype == np.float32
    assert image.min() == 0.0 and image.max() == pytest.approx(1.0, abs=0.02)
    assert (
        image[0].max() == image[-1].max() == image[:, 0].max() == image[:, -1].max() == 0.0
    )  # dark background
    rows, cols = np.nonzero(image > 0.2)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 == 20  # fitted into the 20x20 box
    row, col = centre_of_mass(image)
    assert abs(row - 13.5) <= 1.0 and abs(col - 13.5) <= 1.0


def best_match(image: np.ndarray, reference: np.ndarray) -> float:
    """Correlation of two 28x28 images, allowing the one-pixel shift that rounding the centre may cause."""
    shifted = (np.roll(image, (dy, dx), axis=(0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    return max(float(np.corrcoef(s.ravel(), reference.ravel())[0, 1]) for s in shifted)


def test_a_blown_up_mnist_digit_comes_back_as_itself(tmp_path: Path, t10k_dir: Path) -> None:
    from training.datasets import load_dataset

    split = load_dataset("mnist-t10k", t10k_dir)
    for original in split.x_test[:10]:
        enlarged = Image.fromarray(255 - original).resize((280, 280), Image.Resampling.BICUBIC)
        canvas = Image.new("L", (700, 500), 255)
        canvas.paste(enlarged, (330, 40))  # far from the centre: the preprocessing must re-centre it
        canvas.save(tmp_path / "digit.png")

        recovered = read_image(tmp_path / "digit.png").reshape(28, 28)
        assert best_match(recovered, original / 255.0) > 0.95


def test_transparent_background_is_treated_as_paper(tmp_path: Path) -> None:
    on_white = read_image(drawn_digit("3", tmp_path / "white.png"))
    on_nothing = read_image(drawn_digit("3", tmp_path / "alpha.png", "RGBA", (0, 0, 0, 0), (0, 0, 0, 255)))
    np.testing.assert_allclose(on_nothing, on_white, atol=0.05)


def test_light_on_dark_input_is_not_inverted(tmp_path: Path) -> None:
    dark = read_image(drawn_digit("4", tmp_path / "dark.png", background="black", ink="white"))
    light = read_image(drawn_digit("4", tmp_path / "light.png"))
    np.testing.assert_allclose(dark, light, atol=0.05)


def test_a_blank_picture_is_refused(tmp_path: Path) -> None:
    Image.new("L", (100, 100), 255).save(tmp_path / "blank.png")
    with pytest.raises(ValueError, match="no digit"):
        read_image(tmp_path / "blank.png")


def test_a_file_that_is_not_a_picture_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(ValueError, match="not a readable image"):
        read_image(tmp_path / "notes.png")
