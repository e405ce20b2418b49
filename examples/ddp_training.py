"""Fine-tune with CE + SCL on several GPUs: Keras on torch, DistributedDataParallel, one process per GPU.

    torchrun --nproc_per_node=NUM_GPUS examples/ddp_training.py

Keras 3.15 `fit` does not drive DDP, so this is a plain torch loop around the
Keras model, as in the keras.io guide "Multi-GPU distributed training with
PyTorch": the `SCLClassifier` is wrapped in `DistributedDataParallel`, a torch
optimizer steps its variables, and `model.compute_loss` gives the training
objective. Each process takes its own share of every global batch
(`--batch-size` examples, so the global batch is `--batch-size` × the number
of processes); the SCL term sees the global batch (`keras_scl.distributed`),
and the gradients DDP averages are those of one process on the global batch.

Without GPUs it runs with CPU processes and the gloo backend, e.g. on the
embedded data and the tiny encoder:

    torchrun --nproc_per_node=2 examples/ddp_training.py --encoder tiny

Rank 0 prints the epoch means over all ranks, evaluates the test split at the
end and writes `results.json` into `--output`.
"""

import argparse
import json
import os
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"  # DDP is torch's

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from tqdm import tqdm  # noqa: E402

from keras_scl import SCLClassifier  # noqa: E402
from keras_scl import SupervisedContrastiveLoss  # noqa: E402
from keras_scl.experiments.data import few_shot_splits  # noqa: E402
from keras_scl.experiments.data import load_task  # noqa: E402
from keras_scl.experiments.encoders import text_classifier  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="mini/films", help="a task of keras_scl.experiments.data.TASKS")
    parser.add_argument("--encoder", default="embedded", help="see keras_scl.experiments.encoders")
    parser.add_argument("--train-size", type=int, default=100, help="training examples (0: the whole split)")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per process and step")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--scl-weight", type=float, default=0.9)
    parser.add_argument("--temperature", type=float, default=0.3)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--mixed-precision", action="store_true", help="bf16 compute (GPUs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/ddp"))
    return parser.parse_args(argv)


def setup():
    """Joins the process group torchrun describes; returns `(rank, world_size)`."""
    if torch.cuda.is_available():
        # Before any Keras variable exists: Keras puts them on the current CUDA device.
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def distributed_batches(x, y, batch_size, seed):
    """A `DataLoader` of this rank's share of each global batch, reshuffled by `set_epoch`.

    Every rank must see the same number of batches of the same size (the
    SCL loss gathers them): `drop_last` drops the rest.
    """
    tensors = [torch.from_numpy(np.asarray(x[key])) for key in sorted(x)] + [torch.from_numpy(np.asarray(y))]
    dataset = torch.utils.data.TensorDataset(*tensors)
    sampler = torch.utils.data.distributed.DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True)


def train_step(ddp_model, model, optimizer, x, y, sample_weight=None):
    """One step of the global objective; returns this rank's loss.

    `ddp_model` runs the forward pass (so that DDP averages the gradients in
    `backward`), `model`, the `SCLClassifier` inside it, the loss: CE of this
    rank's examples plus SCL of the global batch.
    """
    optimizer.zero_grad(set_to_none=True)
    y_pred = ddp_model(x, training=True)
    loss = model.compute_loss(x, y, y_pred, sample_weight=sample_weight, training=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def main(argv=None):
    args = parse_args(argv)
    rank, world_size = setup()
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(args.seed)  # the same start on every rank (DDP also copies rank 0's weights)

    task = load_task(args.task)
    splits = few_shot_splits(
        task.train.labels, task.evaluation.labels, n=args.train_size or len(task.train), num_subsamples=1,
        validation_size=0, seed=args.seed,
    )  # fmt: skip
    train, test = task.train.take(splits.train[0]), task.evaluation.take(splits.test)
    classifier, description = text_classifier(
        args.encoder, task.spec.num_classes, args.sequence_length, texts=train.texts[0].tolist()
    )
    model = SCLClassifier(classifier, scl_weight=args.scl_weight)
    # No Keras optimizer: the torch optimizer below trains the model through DDP.
    model.compile(
        optimizer=None,
        loss=SupervisedContrastiveLoss(temperature=args.temperature),
        metrics=["sparse_categorical_accuracy"],
    )
    # Tokenised once, not every epoch. KerasHub's preprocessor takes lists of strings, by keyword (a positional
    # tuple would read as `(x, y)`, and a sentence pair is a tuple).
    texts = tuple(column.tolist() for column in train.texts)
    token_ids = classifier.preprocessor(x=texts[0] if len(texts) == 1 else texts)
    token_ids = {key: keras.ops.convert_to_numpy(value) for key, value in token_ids.items()}
    batches = distributed_batches(token_ids, train.labels, args.batch_size, args.seed)
    if rank == 0:
        print(
            f"{args.task}: {len(train)} training examples, {world_size} processes × {args.batch_size} = global "
            f"batch {world_size * args.batch_size}, {len(batches)} steps per epoch; {description}"
        )

    device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
    ddp_model = DistributedDataParallel(model, device_ids=device_ids)
    parameters = [variable.value for variable in model.trainable_variables]
    optimizer = torch.optim.AdamW(parameters, lr=args.learning_rate, weight_decay=0.01)

    trackers = (model.ce_tracker, model.scl_tracker, model.positive_fraction_tracker)
    history = []
    for epoch in range(args.epochs):
        batches.sampler.set_epoch(epoch)
        for tracker in trackers:
            tracker.reset_state()
        total = torch.zeros((), device=parameters[0].device)
        for *inputs, labels in tqdm(batches, desc=f"epoch {epoch + 1}", disable=rank != 0, leave=False):
            x = dict(zip(sorted(token_ids), (tensor.to(total.device) for tensor in inputs), strict=True))
            total += train_step(ddp_model, model, optimizer, x, labels.to(total.device))
        # Means over this rank's steps, then over the ranks (one collective, one read per epoch).
        logs = torch.stack([total / len(batches), *(tracker.result() for tracker in trackers)])
        dist.all_reduce(logs)
        names = ["loss", *(tracker.name for tracker in trackers)]
        history.append(dict(zip(names, (logs / world_size).tolist(), strict=True)))
        if rank == 0:
            print(f"epoch {epoch + 1}: " + ", ".join(f"{name} {value:.4f}" for name, value in history[-1].items()))

    if rank == 0:  # evaluation needs no other rank: the loss gathers only while autograd records
        test_logs = model.evaluate(test.inputs(), test.labels, batch_size=32, return_dict=True, verbose=0)
        print(f"test: {len(test)} examples, accuracy {test_logs['sparse_categorical_accuracy']:.3f}")
        args.output.mkdir(parents=True, exist_ok=True)
        results = {"world_size": world_size, "batch_size": args.batch_size, "history": history, "test": test_logs}
        (args.output / "results.json").write_text(json.dumps(results, indent=1))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
