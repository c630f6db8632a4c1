"""The SageMaker stack's pure helpers: dataset staging (cache), physical names, ARNs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infra.aws import data as aws_data
from infra.aws.data import stage_sagemaker_csv, staging_key
from infra.aws.names import model_artifact_uri, parse_image_uri, sagemaker_name, sagemaker_prefix
from infra.hashing import content_hash, file_sha256
from training.datasets import default_data_dir

T10K_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture
def data_dir(t10k_dir: Path, tmp_path: Path) -> Path:
    for name in T10K_FILES:
        shutil.copy(t10k_dir / name, tmp_path / name)
    return tmp_path


def test_staging_writes_label_first_channels_with_hashes_and_row_counts(data_dir: Path) -> None:
    staged = stage_sagemaker_csv("mnist-t10k", data_dir, shards=1)
    assert [(f.channel, f.key, f.rows) for f in staged] == [
        ("train", "train/train.csv", 8000),
        ("validation", "validation/validation.csv", 2000),
    ]
    for f in staged:
        assert f.path.is_file() and f.path.stat().st_size == f.size
        # A user's dataDir may be read-only or shared: staging goes to the user cache, never there.
        assert data_dir not in f.path.parents
        assert default_data_dir() in f.path.parents


def test_staging_reuses_its_cache_without_loading_the_dataset(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = stage_sagemaker_csv("mnist-t10k", data_dir, shards=1)

    def no_loading(*_: object) -> None:
        raise AssertionError("the cached staging should have been used")

    monkeypatch.setattr(aws_data, "load_dataset", no_loading)
    assert stage_sagemaker_csv("mnist-t10k", data_dir, shards=1) == first


def test_a_damaged_cache_is_staged_again_with_the_same_bytes(data_dir: Path) -> None:
    first = stage_sagemaker_csv("mnist-t10k", data_dir, shards=1)
    first[0].path.write_text("truncated\n")
    again = stage_sagemaker_csv("mnist-t10k", data_dir, shards=1)
    # Judged by the bytes on disk, not by the manifest's own record of them.
    assert [file_sha256(f.path) for f in again] == [f.sha256 for f in first]
    assert again[0].path.stat().st_size > len("truncated\n")


def test_shards_split_only_the_train_channel(data_dir: Path) -> None:
    staged = stage_sagemaker_csv("mnist-t10k", data_dir, shards=3)
    train = [f for f in staged if f.channel == "train"]
    assert [f.key for f in train] == [f"train/train-00{i}-of-003.csv" for i in range(3)]
    assert sum(f.rows for f in train) == 8000
    assert [f.key for f in staged if f.channel == "validation"] == ["validation/validation.csv"]


def test_staging_key_depends_on_dataset_and_shards() -> None:
    assert staging_key("mnist-t10k", 1) == staging_key("mnist-t10k", 1)
    assert staging_key("mnist-t10k", 1) != staging_key("mnist-t10k", 2)
    assert staging_key("mnist-t10k", 1) != staging_key("mnist", 1)


def test_content_hash_ignores_key_order_and_sees_every_value() -> None:
    assert content_hash({"a": 1, "b": "2"}) == content_hash({"b": "2", "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})
    assert len(content_hash({"a": 1}, 8)) == 8


def test_sagemaker_names_keep_the_digest_and_fit_in_63_characters() -> None:
    digest = "0123456789ab"
    name = sagemaker_name("mnist-" + "x" * 80 + "-xgboost", digest)
    assert len(name) == 63 and name.endswith(f"-{digest}")
    assert name.startswith(sagemaker_prefix("mnist-" + "x" * 80 + "-xgboost", len(digest)))
    assert sagemaker_name("my_stack.dev--xgb", digest) == f"my-stack-dev-xgb-{digest}"


def test_image_uri_gives_the_repository_an_iam_policy_can_name() -> None:
    image = parse_image_uri("683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1")
    assert image.repository_arn("aws") == "arn:aws:ecr:us-east-1:683313688378:repository/sagemaker-xgboost"
    with pytest.raises(ValueError, match="not an ECR image"):
        parse_image_uri("docker.io/library/python:3.12")


def test_model_artifact_is_where_sagemaker_writes_it() -> None:
    assert model_artifact_uri("b", "output", "job-1") == "s3://b/output/job-1/output/model.tar.gz"
