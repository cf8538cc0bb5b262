"""`ArrayDataModule`: the shared base of every regzoo datamodule.

A subclass only loads arrays (`load`; an online dataset fetches its files in `download`, which
only `prepare_data` calls, so under DDP one process per node downloads); the base splits
them (seeded, stratified, the test split kept out of model selection), subsamples `train_size`,
fits `normalize` on the training split, serves raw batches straight from tensors (one indexing
call per batch, no per-sample Python) and augments training batches (`augment`, two backends;
see `datamodules._augment` for what each option means). The fitted normalization is not applied
here: a zoo model takes it (`input_statistics()`) and applies it itself, so it travels with the
model's weights and a reused model takes raw inputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.profiler import record_function
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from regzoo._checks import is_int, is_number
from regzoo._normalize import NORMALIZATIONS, fit_statistics
from regzoo.datamodules._augment import (
    AugmentSpec,
    check_backend,
    check_fits_data,
    parse_augment,
)
from regzoo.datamodules._device_augment import DeviceAugmenter

# The test split of data without an official one is fixed: it must not move with `seed`.
TEST_SEED = 20240317
# Bounds past which torch's samplers overflow, or a DataLoader would fork without end.
MAX_INDEX = 2**31 - 1
MAX_WORKERS = 1024
MAX_SEED = 2**32 - 1


@dataclass
class Arrays:
    """What a subclass's `load` returns: float32 inputs (N, *shape), int64 labels (N,)."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


class TensorBatches(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A dataset indexed by a list of indices, so a DataLoader gathers a batch in one call."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[idx], self.y[idx]


class MemberOrders(Sampler[torch.Tensor]):
    """K batch orders walked in step: each step yields a `(K, B)` tensor of indices whose row k
    is member k's batch, drawn by its own `RandomSampler` seeded as `ArrayDataModule._loader`
    seeds a single trial's and cut into batches as `BatchSampler(drop_last=False)` cuts it.

    Each member's epoch order is read from its sampler once an epoch, into one `(K, N)` tensor
    that the batches are views of: a population of 25 members on 3,200 samples spent 2 s of 60
    epochs zipping 25 `BatchSampler`s index by index."""

    def __init__(self, size: int, batch_size: int, seeds: Sequence[int]) -> None:
        self.size, self.batch_size = size, batch_size
        self.orders = [
            RandomSampler(range(size), generator=torch.Generator().manual_seed(seed))
            for seed in seeds
        ]

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)  # the last batch may be short

    def __iter__(self) -> Iterator[torch.Tensor]:
        # Each sampler is run to its end, as a DataLoader runs it (its generator's state then
        # is the single trial's at the next epoch).
        orders = torch.from_numpy(np.stack([np.fromiter(o, np.int64) for o in self.orders]))
        for start in range(0, self.size, self.batch_size):
            yield orders[:, start : start + self.batch_size]  # (K, B)


class ArrayDataModule(L.LightningDataModule):
    """Base datamodule for data held in memory.

    Args:
        batch_size: Samples per training and evaluation batch.
        val_fraction: Share of the (non-test) training data held out for validation.
        seed: Seeds the shuffling and the augmentation draws (and the split without
            `split_seed`).
        split_seed: Seeds which samples are validation and which `train_size` keeps; None
            follows `seed`. A study fixes it, so every trial and retraining is validated on
            the same samples while `seed` varies.
        normalize: `none`, `minmax` (to [0, 1]), `standard` (zero mean, unit variance) or `pca`
            (whitened principal-component scores, flattened to `(D,)`), fitted on training data
            and applied by the model (create it with `normalize=dm.normalize`).
        train_size: Keep only this many training samples (stratified); None keeps all.
        augment: Augmentation of the training split: `rotation`, `flip`, `zoom`, `shift`,
            `noise`, `p` (meanings in `datamodules._augment`). Validation and test data are
            never augmented.
        augment_backend: `device` (whole batches on the model's device, in
            `on_after_batch_transfer`) or `albumentations` (per sample, in the DataLoader
            workers). Both give each option the same meaning.
        num_workers: DataLoader worker processes.
        data_dir: Where downloadable datasets are stored.
    """

    dataset_name: ClassVar[str] = ""
    test_fraction: ClassVar[float] = 0.2
    # Known without loading data, so a study config can be checked before anything runs.
    nominal_shape: tuple[int, ...] | None = None
    nominal_classes: int = 2
    # What raw inputs are, recorded with a trained model: their range where the dataset fixes
    # one (pixels scaled to [0, 1]), and the classes' names in label order (None: "0", "1", ...).
    raw_range: ClassVar[tuple[float, float] | None] = None
    names: ClassVar[tuple[str, ...] | None] = None

    def __init__(
        self,
        *,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        seed: int = 0,
        split_seed: int | None = None,
        normalize: str = "none",
        train_size: int | None = None,
        augment: dict[str, Any] | None = None,
        augment_backend: str = "device",
        num_workers: int = 0,
        data_dir: str | Path = "data",
    ) -> None:
        super().__init__()
        _check_options(
            batch_size, val_fraction, normalize, train_size, num_workers, seed, split_seed
        )
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.split_seed = seed if split_seed is None else split_seed
        self.normalize = normalize
        self.train_size = train_size
        self.augment_spec: AugmentSpec = parse_augment(augment)
        self.augment = dict(augment or {})
        self.augment_backend = check_backend(augment_backend)
        if self.nominal_shape is not None:
            check_fits_data(self.augment_spec, self.nominal_shape, self.dataset_name)
        self.num_workers = num_workers
        if not isinstance(data_dir, str | os.PathLike):
            raise ValueError(f"data_dir={data_dir!r} is invalid; allowed: a folder path")
        self.data_dir = Path(data_dir)
        self.statistics: dict[str, np.ndarray] | None = None  # of `normalize`, once fitted
        self._other_statistics: dict[str, dict[str, np.ndarray]] = {}  # of other kinds
        self.raw_shape: tuple[int, ...] | None = None
        self.split_indices: dict[str, np.ndarray] = {}
        self._splits: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._num_classes: int | None = None
        self._augmenter: DeviceAugmenter | None = None
        self._transform: Any = None  # the albumentations Compose, when that backend is used
        self._raw_train: np.ndarray | None = None

    def download(self) -> None:
        """Fetch the dataset's files into `data_dir` if they are missing (online datasets).

        Called by `prepare_data` only: Lightning runs that on one process per node.
        """

    def load(self) -> Arrays:
        """Return the dataset as arrays (subclasses); never downloads: a missing file is an
        error that says to call `prepare_data()` first."""
        raise NotImplementedError

    def nominal_input_shape(self) -> tuple[int, ...] | None:
        """The raw input shape this module will serve, without loading data (None: unknown)."""
        return self.nominal_shape

    def nominal_num_classes(self) -> int | None:
        """The number of classes, without loading data (None: unknown until loaded)."""
        return self.nominal_classes if self.nominal_shape is not None else None

    # ---- shape, before training --------------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one raw input, e.g. (1, 8, 8) (a model under `pca` sees `(D,)`).

        Read without any I/O when the dataset declares `nominal_shape` (every registered one
        does), so every DDP process can build its model before `prepare_data` has downloaded
        anything. Otherwise it is known once the data are loaded: reading it loads them (after
        `prepare_data()` for an online dataset; it never downloads).
        """
        shape = self.nominal_input_shape()
        if shape is not None:
            return shape
        return tuple(self.splits["train"][0].shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes; without I/O where the dataset knows it, as `input_shape`."""
        if self._num_classes is None:
            self._num_classes = self.nominal_num_classes()
        if self._num_classes is None:
            self.splits  # noqa: B018  (loads the data)
        assert self._num_classes is not None
        return self._num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        """The name of each class, in label order."""
        return self.names or tuple(str(i) for i in range(self.num_classes))

    def input_statistics(self, kind: str | None = None) -> tuple[str, dict[str, np.ndarray]]:
        """`(normalize, statistics)` fitted on the training split, for the model to apply
        (`Classifier.setup` reads them when training starts); with `kind`, that normalization's
        statistics of the same split instead (population members that differ in `normalize`
        share one datamodule), fitted once each."""
        self.splits  # noqa: B018  (fits them)
        assert self.statistics is not None
        if kind is None or kind == self.normalize:
            return self.normalize, self.statistics
        if kind not in NORMALIZATIONS:
            raise ValueError(f"normalize={kind!r} is invalid; allowed: {', '.join(NORMALIZATIONS)}")
        if kind not in self._other_statistics:
            x_train = self.splits["train"][0].numpy()
            self._other_statistics[kind] = fit_statistics(kind, x_train)
        return kind, self._other_statistics[kind]

    @property
    def splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """`train`, `val` and `test` as raw (inputs, labels) tensors, built once."""
        if self._splits is None:
            self._splits = self._build_splits()
        return self._splits

    # ---- Lightning hooks ---------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Download what `load` needs (online datasets); the only place anything downloads."""
        self.download()

    def setup(self, stage: str | None = None) -> None:
        self.splits  # noqa: B018

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[Any]:
        return self._loader("test", shuffle=False)

    def train_eval_dataloader(self) -> DataLoader[Any]:
        """The training split served as validation is: in order and never augmented (the
        `albumentations` backend augments inside its dataset, so `train_dataloader` cannot be
        used), for measuring how a model fits the data it was trained on."""
        return self._loader("train", shuffle=False, augmented=False)

    def member_train_dataloader(self, seeds: Sequence[int]) -> DataLoader[Any]:
        """The training batches of K members at once, `(x (K, B, *raw), y (K, B))`: member k's
        batches are exactly those `train_dataloader()` serves with `seed=seeds[k]` (a
        population's members each keep their own batch order). Raw, not augmented."""
        if self._transform is not None:
            raise ValueError(
                "augment_backend='albumentations' cannot serve several members' batches; "
                "allowed: augment_backend='device'"
            )
        x, y = self.splits["train"]
        return DataLoader(
            TensorBatches(x, y),
            batch_size=None,
            sampler=MemberOrders(len(y), self.batch_size, seeds),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches on their device (the `device` backend)."""
        if self._augmenter is not None and self.trainer is not None and self.trainer.training:
            x, y = batch
            with record_function("regzoo.augment"):  # a named block in torch.profiler traces
                return self.augment_batch(x), y
        return batch

    # ---- augmentation ------------------------------------------------------------------------

    def augment_batch(self, x: torch.Tensor) -> torch.Tensor:
        """A raw training batch, augmented on its device (`device` backend)."""
        assert self._augmenter is not None
        return self._augmenter(x)

    def augment_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Raw inputs `(B, *raw_shape)` augmented by the configured backend (previews, tests)."""
        self.splits  # noqa: B018  (fits the augmenters)
        if self._augmenter is not None:
            return self._augmenter(x)
        if self._transform is not None:
            from regzoo.datamodules._albu_augment import augment_samples

            return torch.from_numpy(augment_samples(self._transform, x.numpy()))
        return x

    def augmenter_for(self, augment: dict[str, Any] | None) -> DeviceAugmenter | None:
        """A `device`-backend augmenter with other `augment` options over this module's training
        split (None when they augment nothing): each member of a population augments its own
        copy of a shared batch with its own strengths (`regzoo.studies.population`)."""
        spec = parse_augment(augment)
        if not spec.active:
            return None
        x_train = self.raw("train")
        check_fits_data(spec, tuple(x_train.shape[1:]), self.dataset_name)
        low, high = x_train.min(dim=0).values, x_train.max(dim=0).values
        return DeviceAugmenter(
            spec, tuple(x_train.shape[1:]), centre=(low + high) / 2, extent=high - low
        )

    def raw(self, split: str) -> torch.Tensor:
        """A split's raw inputs, `(N, *raw_shape)` (every split is served raw)."""
        return self.splits[split][0]

    def _fit_augmentation(self, x_train: np.ndarray) -> None:
        spec = self.augment_spec
        if not spec.active:
            return
        shape = tuple(x_train.shape[1:])
        check_fits_data(spec, shape, self.dataset_name)
        # Point sets: zoom and shift are relative to the training data's bounding box.
        low, high = x_train.min(axis=0), x_train.max(axis=0)
        centre, extent = (low + high) / 2, high - low
        if self.augment_backend == "device":
            self._augmenter = DeviceAugmenter(
                spec, shape, centre=torch.from_numpy(centre), extent=torch.from_numpy(extent)
            )
        else:
            from regzoo.datamodules._albu_augment import build_transform

            self._transform = build_transform(
                spec, shape, seed=self.seed, centre=centre, extent=extent
            )
            self._raw_train = x_train

    def _loader(self, split: str, *, shuffle: bool, augmented: bool = True) -> DataLoader[Any]:
        data: Dataset[tuple[torch.Tensor, torch.Tensor]] = TensorBatches(*self.splits[split])
        worker_init_fn = None
        if split == "train" and augmented and self._transform is not None:
            from regzoo.datamodules._albu_augment import AugmentedBatches, reseed_worker

            assert self._raw_train is not None
            y = self.splits["train"][1]
            data = AugmentedBatches(self._raw_train, y, self._transform)
            worker_init_fn = reseed_worker
        samples = range(len(self.splits[split][1]))
        if shuffle:
            generator = torch.Generator().manual_seed(self.seed)
            order: Any = RandomSampler(samples, generator=generator)
        else:
            order = SequentialSampler(samples)
        batches = BatchSampler(order, batch_size=self.batch_size, drop_last=False)
        return DataLoader(
            data,
            batch_size=None,
            sampler=batches,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            worker_init_fn=worker_init_fn,
        )

    # ---- splitting and preprocessing ---------------------------------------------------------

    def _build_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        arrays = self.load()
        x, y = arrays.x.astype(np.float32), arrays.y.astype(np.int64)
        if arrays.x_test is None or arrays.y_test is None:
            x_all, y_all = x, y
        else:
            # Official test samples are numbered after the training ones.
            x_all = np.concatenate([x, arrays.x_test.astype(np.float32)])
            y_all = np.concatenate([y, arrays.y_test.astype(np.int64)])
        self.split_indices = self.split(y_all, official_test=len(y_all) - len(y))
        self._num_classes = self._check_declared(tuple(x.shape[1:]), int(y_all.max()) + 1)
        self.raw_shape = tuple(x.shape[1:])
        x_train = x_all[self.split_indices["train"]]
        self.statistics = fit_statistics(self.normalize, x_train)
        self._fit_augmentation(x_train)
        return {
            split: (
                torch.from_numpy(np.ascontiguousarray(x_all[idx])),
                torch.from_numpy(y_all[idx]),
            )
            for split, idx in self.split_indices.items()
        }

    def split(self, y: np.ndarray, *, official_test: int = 0) -> dict[str, np.ndarray]:
        """Indices of `train`, `val` and `test` into labels `y`: the last `official_test` are
        the test split, else a stratified `test_fraction` that no seed moves; then a stratified
        `val_fraction` drawn by `split_seed`, and the `train_size` subsample.

        Raises scikit-learn's ValueError where a class has too few samples to stratify.
        """
        index = np.arange(len(y) - official_test)
        if official_test:
            test_index = np.arange(len(y) - official_test, len(y))
        else:
            index, test_index = train_test_split(
                index, test_size=self.test_fraction, random_state=TEST_SEED, stratify=y
            )
        train_index, val_index = train_test_split(
            index, test_size=self.val_fraction, random_state=self.split_seed, stratify=y[index]
        )
        if self.train_size is not None and self.train_size < len(train_index):
            train_index, _ = train_test_split(
                train_index,
                train_size=self.train_size,
                random_state=self.split_seed,
                stratify=_stratify_if_possible(y[train_index], self.train_size),
            )
        return {"train": train_index, "val": val_index, "test": test_index}

    def _check_declared(self, shape: tuple[int, ...], labels: int) -> int:
        """The number of classes of loaded data with inputs of `shape` and labels below `labels`;
        refused where it contradicts what `input_shape` and `num_classes` said before loading
        (a model may have been built from them)."""
        where = f"{self.dataset_name or type(self).__name__} (data_dir={str(self.data_dir)!r})"
        if self.nominal_shape is not None and shape != tuple(self.nominal_shape):
            raise ValueError(
                f"{where}: loaded inputs of shape {shape}, expected {tuple(self.nominal_shape)}"
            )
        declared = self.nominal_num_classes()
        if declared is None:
            return labels
        if labels > declared:
            raise ValueError(
                f"{where}: loaded labels up to {labels - 1}, expected {declared} classes "
                f"(0 to {declared - 1})"
            )
        return declared


def _stratify_if_possible(y: np.ndarray, size: int) -> np.ndarray | None:
    """Stratify a subsample when every class can get a sample in both the kept and the dropped
    part (scikit-learn refuses otherwise); tiny sizes fall back to a random subsample."""
    classes = len(np.unique(y))
    return y if min(size, len(y) - size) >= classes else None


def _check_options(
    batch_size: Any,
    val_fraction: Any,
    normalize: Any,
    train_size: Any,
    num_workers: Any,
    seed: Any,
    split_seed: Any,
) -> None:
    if not is_int(batch_size, 1, MAX_INDEX):
        raise ValueError(f"batch_size={batch_size!r} is invalid; allowed: an integer in [1, 2**31)")
    if not is_number(val_fraction) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r} is invalid; allowed: a number in (0, 1)")
    if not isinstance(normalize, str) or normalize not in NORMALIZATIONS:
        raise ValueError(
            f"normalize={normalize!r} is invalid; allowed: {', '.join(NORMALIZATIONS)}"
        )
    if train_size is not None and not is_int(train_size, low=1):
        raise ValueError(f"train_size={train_size!r} is invalid; allowed: an integer >= 1 or None")
    if not is_int(num_workers, 0, MAX_WORKERS):
        raise ValueError(
            f"num_workers={num_workers!r} is invalid; allowed: an integer in [0, {MAX_WORKERS}]"
        )
    if not is_int(seed, 0, MAX_SEED):  # numpy and scikit-learn take 32-bit seeds
        raise ValueError(f"seed={seed!r} is invalid; allowed: an integer in [0, 2**32)")
    if split_seed is not None and not is_int(split_seed, 0, MAX_SEED):
        raise ValueError(
            f"split_seed={split_seed!r} is invalid; allowed: an integer in [0, 2**32) or None"
        )
