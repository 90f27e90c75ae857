"""The ``movierec`` command line. Commands parse flags and delegate to plain functions.

Trainer modules (torch, pandas) are imported inside the commands that need them, so ``movierec --help``
is instant and later service commands never load torch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from movierec.cli_db import db_app

app = typer.Typer(
    name="movierec",
    help="Train movie recommenders on MovieLens and publish versioned artifacts for the service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db_app, name="db")
console = Console()
err_console = Console(stderr=True)

# Options shared by `train` and `evaluate` (data and split); each mirrors a TrainSettings field.
DataOpt = Annotated[Path | None, typer.Option(help="MovieLens folder or zip, or a ratings CSV [MOVIEREC_DATA]")]
DatasetOpt = Annotated[
    str | None, typer.Option(help="MovieLens release to download and cache, e.g. ml-latest-small, ml-100k")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML or YAML file of settings")]
SplitOpt = Annotated[str | None, typer.Option(help="random | leave-last | ml100k-fold | none")]


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=2)


def _int_list(value: str | None, flag: str) -> tuple[int, ...] | None:
    """``"256,128"`` -> (256, 128); ``""`` or ``"none"`` -> (); None (flag not given) stays None."""
    if value is None:
        return None
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if parts in ([], ["none"]):
        return ()
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        _fail(f"{flag} takes comma-separated integers, got {value!r}")
        raise


def _settings(config: Path | None, overrides: dict[str, Any]):  # type: ignore[no-untyped-def]
    from trainer.config import ConfigError, load_settings

    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        _fail(str(exc))


def _metrics_table(table: dict[str, dict[str, float]], title: str) -> Table:
    cols = ["rmse", "mae", "mse", "accuracy", "f1_weighted", "recall@10", "ndcg@10", "hr@10", "recall@20", "ndcg@20"]
    present = [c for c in cols if any(c in row for row in table.values())]
    t = Table(title=title)
    t.add_column("model")
    for c in present:
        t.add_column(c, justify="right")
    for name, row in table.items():
        t.add_row(name, *[f"{row[c]:.4f}" if c in row else "" for c in present])
    return t


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def train(
    config: ConfigOpt = None,
    data: DataOpt = None,
    dataset: DatasetOpt = None,
    model: Annotated[str | None, typer.Option(help="model kind: mf | als | bpmf | gravity | softmax | sequence")] = None,
    split: SplitOpt = None,
    test_fraction: Annotated[float | None, typer.Option(help="random split: share of ratings held out")] = None,
    leave_last: Annotated[int | None, typer.Option(help="leave-last split: ratings per user held out")] = None,
    fold: Annotated[str | None, typer.Option(help="ml100k-fold split: 1..5, a or b")] = None,
    valid_fraction: Annotated[float | None, typer.Option(help="share of train used for early stopping")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | cuda:N")] = None,
    out: Annotated[Path | None, typer.Option("--out", "--artifacts-dir", help="artifacts root folder")] = None,
    dim: Annotated[int | None, typer.Option(help="embedding size")] = None,
    biases: Annotated[bool | None, typer.Option("--biases/--no-biases")] = None,
    offset: Annotated[bool | None, typer.Option("--offset/--no-offset")] = None,
    output: Annotated[str | None, typer.Option(help="sigmoid | linear")] = None,
    sigmoid_low: Annotated[float | None, typer.Option()] = None,
    sigmoid_high: Annotated[float | None, typer.Option()] = None,
    init: Annotated[str | None, typer.Option(help="uniform | normal")] = None,
    init_scale: Annotated[float | None, typer.Option()] = None,
    side_features: Annotated[
        list[str] | None, typer.Option("--side-feature", help="genre and/or year (repeatable)")
    ] = None,
    optimizer: Annotated[str | None, typer.Option(help="adam | adamw | sgd")] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    l2: Annotated[float | None, typer.Option(help="batch L2 on touched embedding rows")] = None,
    l2_bias: Annotated[float | None, typer.Option(help="batch L2 on touched biases")] = None,
    schedule: Annotated[str | None, typer.Option(help="onecycle | constant")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option(help="0 = auto (1024 on small data, ~256 steps/epoch)")] = None,
    patience: Annotated[int | None, typer.Option(help="early-stopping patience; 0 disables")] = None,
    amp: Annotated[bool | None, typer.Option("--amp/--no-amp", help="bfloat16 autocast on CUDA")] = None,
    metrics_json: Annotated[Path | None, typer.Option(help="also write the metrics here")] = None,
    # softmax
    softmax_hidden: Annotated[
        str | None, typer.Option(help="softmax tower hidden widths, comma-separated, e.g. 256,128; '' = none")
    ] = None,
    softmax_input_dim: Annotated[int | None, typer.Option(help="softmax input embedding size; 0 = dim")] = None,
    softmax_tied: Annotated[
        bool | None, typer.Option("--softmax-tied/--no-softmax-tied", help="share input and output embeddings")
    ] = None,
    softmax_weighting: Annotated[str | None, typer.Option(help="softmax bag average: mean | rating")] = None,
    softmax_input_fraction: Annotated[
        float | None, typer.Option(help="softmax: share of each user's ratings used as input per epoch")
    ] = None,
    softmax_target_weighting: Annotated[
        str | None, typer.Option(help="softmax loss: target (each target once) | user (each user once)")
    ] = None,
    softmax_temperature: Annotated[float | None, typer.Option(help="softmax logit temperature")] = None,
    softmax_dropout: Annotated[float | None, typer.Option(help="softmax tower dropout")] = None,
    softmax_sampled: Annotated[
        int | None, typer.Option(help="softmax: 0 = full softmax, N = N sampled negatives (log-Q corrected)")
    ] = None,
    softmax_sample_alpha: Annotated[float | None, typer.Option(help="softmax negatives ~ count ** alpha")] = None,
    softmax_calibration_reg: Annotated[
        float | None, typer.Option(help="softmax rating map: ridge on the user bias")
    ] = None,
    # end softmax
    # sequence (dim and the optimisation flags are the shared ones)
    sequence_length: Annotated[
        int | None, typer.Option(help="sequence: tokens per example (length - 1 past ratings + the target)")
    ] = None,
    sequence_heads: Annotated[int | None, typer.Option(help="sequence: attention heads")] = None,
    sequence_layers: Annotated[int | None, typer.Option(help="sequence: transformer encoder layers")] = None,
    sequence_ff: Annotated[int | None, typer.Option(help="sequence: transformer feed-forward width")] = None,
    sequence_dropout: Annotated[float | None, typer.Option(help="sequence: dropout")] = None,
    sequence_mlp: Annotated[
        str | None, typer.Option(help="sequence: rating MLP hidden widths, comma-separated; '' = none")
    ] = None,
    sequence_feature_dim: Annotated[int | None, typer.Option(help="sequence: user-feature embedding size")] = None,
    sequence_user_features: Annotated[
        bool | None,
        typer.Option("--sequence-user-features/--no-sequence-user-features", help="use the data's user features"),
    ] = None,
    sequence_user_id: Annotated[
        bool | None, typer.Option("--sequence-user-id/--no-sequence-user-id", help="learn a user-id embedding")
    ] = None,
    sequence_retrieval: Annotated[
        str | None, typer.Option(help="sequence: factor arrays hold mf (a biased MF fit) | none (embeddings)")
    ] = None,
    sequence_rerank: Annotated[int | None, typer.Option(help="sequence: candidates re-ranked per user")] = None,
    # end sequence
    # als (dim, epochs = sweeps and patience are the shared flags)
    als_lambda_u: Annotated[float | None, typer.Option(help="ALS prior weight on user vectors")] = None,
    als_lambda_v: Annotated[float | None, typer.Option(help="ALS prior weight on movie vectors")] = None,
    als_lambda_bias: Annotated[float | None, typer.Option(help="ALS prior weight on the biases")] = None,
    als_biased: Annotated[
        bool | None, typer.Option("--als-biased/--no-als-biased", help="ALS: solve biases with the factors")
    ] = None,
    als_normalise: Annotated[
        bool | None, typer.Option("--als-normalise/--no-als-normalise", help="ALS: standardise the targets")
    ] = None,
    als_output: Annotated[
        str | None, typer.Option(help="ALS target space: linear (ratings) | sigmoid (logits, sigmoid back)")
    ] = None,
    als_weighted: Annotated[
        bool | None,
        typer.Option("--als-weighted/--no-als-weighted", help="ALS: penalty times each row's rating count"),
    ] = None,
    als_init_std: Annotated[float | None, typer.Option(help="ALS: std of the initial movie factors")] = None,
    # end als
    # bpmf (dim and epochs = Gibbs iterations are the shared flags)
    bpmf_burn_in: Annotated[int | None, typer.Option(help="BPMF: iterations discarded before averaging")] = None,
    bpmf_keep: Annotated[int | None, typer.Option(help="BPMF: samples kept (export width = dim x keep)")] = None,
    bpmf_alpha: Annotated[float | None, typer.Option(help="BPMF: observation precision (1 / noise variance)")] = None,
    # end bpmf
    # gravity (every mf flag applies too)
    gravity_lambda_r: Annotated[
        float | None, typer.Option(help="gravity: weight of mean_i |U_i|^2 + mean_j |V_j|^2")
    ] = None,
    gravity_lambda_g: Annotated[
        float | None, typer.Option(help="gravity: weight of the mean squared score over all pairs")
    ] = None,
    # end gravity
    track_test: Annotated[
        bool | None, typer.Option("--track-test/--no-track-test", help="score the test split after every epoch")
    ] = None,
    from_db: Annotated[
        bool | None, typer.Option("--from-db", help="train on the SQL store instead of files [MOVIEREC_FROM_DB]")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(help="store URL for --from-db [MOVIEREC_DATABASE_URL, default sqlite:///movierec.db]")
    ] = None,
) -> None:
    """Train a model, print its metrics beside the baselines, and publish a new artifact version."""
    overrides = dict(
        data=data, dataset=dataset, model=model, split=split, test_fraction=test_fraction, leave_last=leave_last,
        fold=fold, valid_fraction=valid_fraction, seed=seed, device=device, artifacts_dir=out, dim=dim,
        biases=biases, offset=offset, output=output, sigmoid_low=sigmoid_low, sigmoid_high=sigmoid_high,
        init=init, init_scale=init_scale, side_features=tuple(side_features) if side_features else None,
        optimizer=optimizer, lr=lr, weight_decay=weight_decay, l2=l2, l2_bias=l2_bias, schedule=schedule,
        epochs=epochs, batch_size=batch_size, patience=patience, amp=amp, from_db=from_db, database_url=database_url,
        track_test=track_test,
    )  # fmt: skip
    overrides.update(
        softmax_hidden=_int_list(softmax_hidden, "--softmax-hidden"), softmax_input_dim=softmax_input_dim,
        softmax_tied=softmax_tied, softmax_weighting=softmax_weighting, softmax_input_fraction=softmax_input_fraction,
        softmax_target_weighting=softmax_target_weighting, softmax_temperature=softmax_temperature,
        softmax_dropout=softmax_dropout, softmax_sampled=softmax_sampled, softmax_sample_alpha=softmax_sample_alpha,
        softmax_calibration_reg=softmax_calibration_reg,
    )  # fmt: skip
    overrides.update(
        sequence_length=sequence_length, sequence_heads=sequence_heads, sequence_layers=sequence_layers,
        sequence_ff=sequence_ff, sequence_dropout=sequence_dropout,
        sequence_mlp=_int_list(sequence_mlp, "--sequence-mlp"), sequence_feature_dim=sequence_feature_dim,
        sequence_user_features=sequence_user_features,
        sequence_user_id=sequence_user_id, sequence_retrieval=sequence_retrieval, sequence_rerank=sequence_rerank,
    )  # fmt: skip
    overrides.update(
        als_lambda_u=als_lambda_u, als_lambda_v=als_lambda_v, als_lambda_bias=als_lambda_bias, als_biased=als_biased,
        als_normalise=als_normalise, als_output=als_output, als_weighted=als_weighted, als_init_std=als_init_std,
        gravity_lambda_r=gravity_lambda_r, gravity_lambda_g=gravity_lambda_g,
        bpmf_burn_in=bpmf_burn_in, bpmf_keep=bpmf_keep, bpmf_alpha=bpmf_alpha,
    )  # fmt: skip
    settings = _settings(config, overrides)
    from movierec.progress import EpochProgress
    from trainer.data.dataset import DataError
    from trainer.pipeline import train as run_train

    try:
        with EpochProgress(console, settings.epochs) as progress:
            result = run_train(settings, on_epoch=progress.update)
    except (DataError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
        return
    if "test" in result.metrics:
        console.print(_metrics_table(result.metrics["test"], f"test metrics ({settings.split} split)"))
    console.print(
        f"trained {result.metrics['epochs_run']} epochs in {result.train_seconds:.1f}s "
        f"(best epoch {result.metrics['best_epoch']})"
    )
    if metrics_json is not None:
        metrics_json.write_text(json.dumps(result.metrics, indent=2, default=float))
    console.print(f"published [bold]{result.version_dir}[/]")


@app.command()
def evaluate(
    artifact_dir: Annotated[Path, typer.Argument(help="a version folder, or an artifacts root (uses latest)")],
    config: ConfigOpt = None,
    data: DataOpt = None,
    dataset: DatasetOpt = None,
    split: SplitOpt = None,
    test_fraction: Annotated[float | None, typer.Option()] = None,
    leave_last: Annotated[int | None, typer.Option()] = None,
    fold: Annotated[str | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Re-score a saved model on a split (numpy only: the artifact's own prediction formula)."""
    settings = _settings(
        config,
        dict(data=data, dataset=dataset, split=split, test_fraction=test_fraction, leave_last=leave_last,
             fold=fold, seed=seed),
    )  # fmt: skip
    from movierec.artifacts import ArtifactError
    from trainer.data.dataset import DataError
    from trainer.pipeline import evaluate_artifact

    try:
        result = evaluate_artifact(artifact_dir, settings)
    except (ArtifactError, DataError, ValueError) as exc:
        _fail(str(exc))
        return
    console.print(_metrics_table({result["version"]: result["model"]}, f"{settings.split} split"))
    console.print(
        f"scored {result['n_scored']} of {result['n_test']} test ratings "
        f"({result['n_unknown']} with ids unknown to the model); same data as training: {result['same_data']}"
    )


@app.command("report")
def report_command(
    artifact_dir: Annotated[Path, typer.Argument(help="a version folder, or an artifacts root (uses latest)")],
) -> None:
    """Redraw a version's training report (plots and tables) into ROOT/reports/<version>/report.html."""
    from movierec.artifacts import ArtifactError
    from movierec.report import ReportError, write_report

    try:
        page = write_report(artifact_dir)
    except (ArtifactError, ReportError) as exc:
        _fail(f"cannot draw the report: {exc}")
        return
    console.print(f"wrote [bold]{page}[/]")


def _service_settings(overrides: dict[str, Any]):  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from service.config import ServiceSettings

    try:
        return ServiceSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        _fail(f"invalid service settings: {problems}")


HostOpt = Annotated[str | None, typer.Option(help="bind address [MOVIEREC_HOST, default 127.0.0.1]")]
PortOpt = Annotated[int | None, typer.Option(help="port [MOVIEREC_PORT, default 8000]")]
WorkersOpt = Annotated[int | None, typer.Option(help="uvicorn worker processes [MOVIEREC_WORKERS]")]
ArtifactsOpt = Annotated[
    Path | None, typer.Option("--artifacts-dir", help="artifacts root to serve [MOVIEREC_ARTIFACTS_DIR]")
]
DatabaseOpt = Annotated[str | None, typer.Option(help="SQLAlchemy URL of the store [MOVIEREC_DATABASE_URL]")]


@app.command()
def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    workers: WorkersOpt = None,
    artifacts_dir: ArtifactsOpt = None,
    database_url: DatabaseOpt = None,
    index: Annotated[str | None, typer.Option(help="flat (exact) | hnsw (approximate) [MOVIEREC_INDEX]")] = None,
) -> None:
    """Serve the latest artifact version over HTTP (migrates the store's schema first)."""
    settings = _service_settings(
        dict(host=host, port=port, workers=workers, artifacts_dir=artifacts_dir, database_url=database_url, index=index)
    )
    from service.server import serve as run_server

    run_server(settings)


@app.command()
def up(
    data: DataOpt = None,
    dataset: DatasetOpt = None,
    synthetic: Annotated[bool, typer.Option("--synthetic", help="generated ml-100k-shaped data, no download")] = False,
    host: HostOpt = None,
    port: PortOpt = None,
    workers: WorkersOpt = None,
    artifacts_dir: ArtifactsOpt = None,
    database_url: DatabaseOpt = None,
) -> None:
    """Load the data into the store, train a default model if none is published, and serve it."""
    settings = _service_settings(
        dict(host=host, port=port, workers=workers, artifacts_dir=artifacts_dir, database_url=database_url)
    )
    from movierec.up import up as run_up
    from trainer.data.dataset import DataError

    try:
        run_up(settings, data=data, dataset=dataset, synthetic=synthetic)
    except (DataError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))


@app.command()
def synth(
    shape: Annotated[str, typer.Option(help="ml-1m | ml-25m | ml-100k | USERSxMOVIESxRATINGS")],
    out: Annotated[Path, typer.Option(help="folder to write (MovieLens ml-latest CSV layout)")],
    rank: Annotated[int, typer.Option(help="rank of the planted structure")] = 8,
    noise: Annotated[float, typer.Option(help="std of the Gaussian rating noise")] = 0.3,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write a synthetic MovieLens-format dataset with planted low-rank structure."""
    from trainer.data.dataset import DataError
    from trainer.data.synth import generate, parse_shape, write_movielens

    try:
        n_users, n_items, n_ratings = parse_shape(shape)
        syn = generate(n_users, n_items, n_ratings, rank=rank, noise=noise, seed=seed)
        write_movielens(syn.data, out)
    except (DataError, ValueError) as exc:
        _fail(str(exc))
        return
    console.print(f"wrote {n_ratings} ratings ({n_users} users x {n_items} movies) to {out}")


@app.command()
def sweep(
    config: Annotated[Path, typer.Argument(help="TOML or YAML: [base] settings and [ablate] or [grid] lists")],
    out: Annotated[Path | None, typer.Option(help="results folder [default: sweeps/<config stem>/ beside it]")] = None,
) -> None:
    """Train every run of an ablation or grid (resuming: finished runs are skipped), then plot and summarise."""
    from trainer.config import ConfigError
    from trainer.data.dataset import DataError
    from trainer.sweep import run_sweep

    def report(done: int, total: int, row: dict[str, Any]) -> None:
        what = ", ".join(f"{k}={v}" for k, v in row["varied"].items()) or "baseline"
        score = f"test RMSE {row['test_rmse']:.4f}" if row.get("test_rmse") is not None else row["status"]
        console.print(f"[{done}/{total}] {row['run_id']} {what}: {score}")

    try:
        result = run_sweep(config, out, on_run=report)
    except (ConfigError, DataError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
        return
    console.print(
        f"{len(result.rows)} runs ({len(result.ran)} trained now, {len(result.skipped)} already done): "
        f"[bold]{result.summary}[/]"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
