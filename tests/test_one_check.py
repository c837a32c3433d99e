"""One owner per check (issue 21): the task names, "does this name fit this task" and "does it take this option" live in
`medlab.core.catalog`; config, tasks, losses and metrics ask it, so a user reads the same sentence from each of them.
Builder registries (`LOSS_BUILDERS`, ...) are named apart from the catalog's metadata (`catalog.LOSSES`, ...)."""
import ast
from pathlib import Path

import pytest

from medlab.core import catalog
from medlab.core.catalog import ARCHITECTURES, LOSSES, METRICS, OPTIMIZERS, TASKS, check_option_keys, fits_task, task_misfit
from medlab.core.config import MedlabConfig

PACKAGE = Path(__file__).resolve().parents[1] / 'medlab'


@pytest.mark.parametrize('registry, name, fits, misfits', [
    (METRICS, 'dice', ['segmentation'], ['classification', 'regression']),
    (METRICS, 'accuracy', ['segmentation', 'classification'], ['regression']),
    (METRICS, 'mae', ['regression'], ['segmentation', 'classification']),
    (LOSSES, 'cel', ['classification'], ['segmentation', 'regression']),
    (LOSSES, 'dcce', ['segmentation'], ['classification', 'regression']),
    (ARCHITECTURES, 'unet', ['segmentation'], ['classification', 'regression']),
    (ARCHITECTURES, 'resnet18', ['classification', 'regression'], ['segmentation']),
    (OPTIMIZERS, 'adam', ['segmentation', 'classification', 'regression'], []),   # an optimizer serves every task
])
def test_fits_task_with_real_names(registry, name, fits, misfits):
    assert [t for t in TASKS if fits_task(registry, name, t)] == fits
    assert [t for t in TASKS if not fits_task(registry, name, t)] == misfits


def test_fits_task_refuses_a_misspelt_task_or_name():
    with pytest.raises(ValueError, match="unknown task 'segmentaton'; did you mean 'segmentation'"): fits_task(METRICS, 'dice', 'segmentaton')
    with pytest.raises(KeyError, match="unknown metric 'dise'; did you mean 'dice'"): fits_task(METRICS, 'dise', 'segmentation')


def test_task_misfit_names_the_key_and_the_names_that_would_fit():
    assert task_misfit(METRICS, 'dice', 'segmentation', 'metrics') is None
    line = task_misfit(LOSSES, 'cel', 'segmentation', 'loss_function')
    assert line == ("loss_function: 'cel' is not a segmentation loss; use one of ce, dc, dc_focal, dc_log, dcce, dcce_logits, "
                    "focal, mcc, mcc_log, tversky")
    line = task_misfit(METRICS, 'dice', 'regression', 'metrics')
    assert line == "metrics: 'dice' does not score regression; use one of mae, mse, rmse"


def test_an_unknown_option_names_the_key_and_the_valid_ones():
    with pytest.raises(ValueError) as e: check_option_keys(LOSSES, 'tversky', ['smooth'], 'loss_options')
    assert str(e.value) == 'loss_options.smooth: not an option of tversky; valid names: alpha, beta'
    with pytest.raises(ValueError, match=r"loss_options\.alpah: not an option of tversky; did you mean 'alpha'\?"):
        check_option_keys(LOSSES, 'tversky', ['alpha', 'alpah'], 'loss_options')
    with pytest.raises(ValueError, match=r'loss_options\.gamma: not an option of dc; it is an option of dc_focal, focal'):
        check_option_keys(LOSSES, 'dc', ['gamma'], 'loss_options')
    with pytest.raises(ValueError, match=r'metric_options\.hd95\.percentile: not an option of hd95; hd95 takes no options'):
        check_option_keys(METRICS, 'hd95', ['percentile'], 'metric_options.hd95')
    check_option_keys(OPTIMIZERS, 'sgd', ['momentum', 'nesterov'], 'optimizer')   # the catalog's defaults are its options


def _message(call) -> str:
    with pytest.raises(ValueError) as e: call()
    return str(e.value)


def test_config_and_the_loss_builder_say_the_same_about_an_unknown_loss_option():
    from medlab.nets.losses import build_loss
    said = "loss_options.gama: not an option of focal; did you mean 'gamma'?"
    assert said in _message(lambda: MedlabConfig(loss_function='focal', loss_options={'gama': 2}))
    assert _message(lambda: build_loss('focal', gama=2)) == said


def test_config_and_the_metric_builder_say_the_same_about_an_unknown_metric_option():
    from medlab.nets.metrics import build_metrics
    said = "metric_options.recall.averge: not an option of recall; did you mean 'average'?"
    assert said in _message(lambda: MedlabConfig(model={'architecture': 'resnet18'}, loss_function='cel', metrics=['recall'],
                                                 metric_options={'recall': {'averge': 'macro'}}))
    assert _message(lambda: build_metrics(['recall'], [0, 1], 'classification', {'recall': {'averge': 'macro'}})) == said


def test_tasks_and_the_metric_builder_say_the_same_about_a_metric_of_another_task():
    from medlab.datasets.tasks import task_problems
    from medlab.nets.metrics import build_metrics
    cfg = MedlabConfig(model={'architecture': 'resnet18'}, loss_function='cel', metrics=['dice'])
    problems = task_problems(cfg.model, cfg.loss_function, cfg.metrics)
    assert problems == [_message(lambda: build_metrics(['dice'], [0, 1], 'classification'))]
    assert problems[0].startswith("metrics: 'dice' does not score classification; use one of accuracy, balanced_accuracy")


def test_task_names_are_defined_once():
    import typing
    import medlab.datasets.tasks as tasks_mod
    import medlab.nets.metrics as metrics_mod
    assert tuple(TASKS) == ('segmentation', 'classification', 'regression')
    assert metrics_mod.TASKS is TASKS and tasks_mod.TASKS is TASKS
    assert typing.get_args(MedlabConfig.model_fields['problem_type'].annotation)[0] == typing.Literal[tuple(TASKS)]
    for name, cls in tasks_mod.TASK_CLASSES.items():   # each task class is filed under a task name (regions: a kind of segmentation)
        assert cls.name in TASKS and name.endswith(cls.name)
    assert TASKS['segmentation'].target_column == 'Label' and TASKS['regression'].target_column == 'ValueToPredict'


@pytest.mark.parametrize('module, builders, metadata', [
    ('medlab.nets.models', 'ARCHITECTURE_BUILDERS', 'ARCHITECTURES'), ('medlab.nets.losses', 'LOSS_BUILDERS', 'LOSSES'),
    ('medlab.nets.metrics', 'METRIC_BUILDERS', 'METRICS'), ('medlab.nets.optim', 'OPTIMIZER_BUILDERS', 'OPTIMIZERS'),
    ('medlab.nets.optim', 'SCHEDULER_BUILDERS', 'SCHEDULERS')])
def test_builder_registries_are_named_apart_from_the_catalog(module, builders, metadata):
    import importlib
    mod = importlib.import_module(module)
    assert set(getattr(mod, builders)) == set(getattr(catalog, metadata))   # a builder for every name, and no more
    assert getattr(mod, metadata, None) in (None, getattr(catalog, metadata)), f'{module}.{metadata} is not the catalog'


def _offenders(check) -> list[str]:
    "Files of medlab (the catalog aside) with a node `check` accepts, as 'file:line'."
    found = []
    for f in sorted(PACKAGE.rglob('*.py')):
        if f.name == '_modidx.py' or f == PACKAGE / 'core' / 'catalog.py': continue
        for node in ast.walk(ast.parse(f.read_text())):
            if check(node): found.append(f'{f.relative_to(PACKAGE.parent).as_posix()}:{node.lineno}')
    return found


def _reads_tasks(node) -> bool:
    "Reads which tasks a loss or metric of the catalog serves (`info.tasks`)."
    return isinstance(node, ast.Attribute) and node.attr == 'tasks'


def _says_option_problem(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and any(
        s in node.value for s in ('not an option of', 'unknown option', 'takes no options', 'does not score', 'cannot score'))


def test_only_the_catalog_checks_names_against_tasks():
    found = _offenders(_reads_tasks)
    assert not found, 'task checks outside medlab.core.catalog (use catalog.fits_task / task_misfit):\n' + '\n'.join(found)


def test_only_the_catalog_words_option_and_task_problems():
    found = _offenders(_says_option_problem)
    assert not found, 'option/task messages outside medlab.core.catalog (use catalog.check_option_keys / task_misfit):\n' + '\n'.join(found)
