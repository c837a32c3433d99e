"""Run the `gandlf` command line with timestamps at GaNDLF's own hooks (GaNDLF 0.1.5, its own venv).

    GANDLF_PROBE_LOG=events.jsonl gandlf-venv/bin/python benchmarks/gandlf_probe.py run -c CFG -i a.csv,b.csv,c.csv -m OUT -t --reset

is `gandlf run ...` plus a JSON line per event, `time.time()` in `t`, so the benchmark can time GaNDLF the way
the MONAI loop times itself (GaNDLF's CSV logs carry no times): `first_step` (first call of
`GandlfLightningModule.training_step`, the batch already loaded, right before its forward pass),
`train_epoch_start`, `val_start`, `val_end` (after GaNDLF wrote the epoch's row to logs_validation.csv; its
predictions are written per subject before that), `train_epoch_end` (after its `latest` checkpoint), `test_start`,
`test_end`. The wrappers only record a time and call GaNDLF's method; nothing else changes, except seeding:
GaNDLF 0.1.5 seeds nothing (its `determinism` option is read nowhere), so the probe seeds `random`, numpy and
torch with GANDLF_PROBE_SEED (default 0) to make the run repeatable like the other systems' seed 0.

Classification: GaNDLF 0.1.5 writes no usable validation predictions. Its classification CSV
(`output_validation/epoch_<e>/output_predictions.csv`, `Epoch,SubjectID,PredictedValue`, from
`on_validation_epoch_end` -> `_save_predictions_csv_for_regression_or_classification`) is written only on the
`label_present` branch of `validation_step`, and its PredictedValue is `_process_prediction_logit_for_row_writing`
= `model_output.max()`: the largest probability, not the class. With `ValueToPredict` subjects `label_present`
(`subject["label"] != ["NA"]`) is False, so validation takes the segmentation branch
(`_get_predictions_on_subject_using_grid_sampler`) and with `save_output: true` crashes in
`_save_predictions_for_segmentation_subject` (`np.swapaxes` on a 0-d array); the harness therefore runs cls2d with
`save_output: false`, as the shared config has it. Its own overall metrics come from `val_predictions`, to which
`validation_step` appends only when `... or classification and label` is true: a subject whose label tensor is 0
is skipped. So the probe records, per validation subject, the output GaNDLF's `validation_step` computed (the
return of `_get_predictions_on_subject_using_grid_sampler` or `..._label_sampler`, (1, classes) after its final
layer, averaged over patches) and writes `output_validation/epoch_<e>/probe_predictions.csv` (SubjectID,
prediction = class_list[argmax], output_<c>) before GaNDLF's `on_validation_epoch_end` runs; segmentation outputs
(more than 2 dimensions) are not recorded. It changes nothing GaNDLF computes or writes.
"""
import json
import os
import random
import sys
import time

LOG = os.environ.get('GANDLF_PROBE_LOG', 'gandlf_events.jsonl')


def event(name, **kw):
    with open(LOG, 'a') as f: f.write(json.dumps({'event': name, 't': time.time(), **kw}) + '\n')


event('probe_start')
from GANDLF.entrypoints.cli_tool import gandlf  # noqa: E402  (imports what `gandlf run` imports)
import GANDLF.models.lightning_module as lm  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

seed = int(os.environ.get('GANDLF_PROBE_SEED', '0'))
random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)
event('imported')

M = lm.GandlfLightningModule
_first = [True]


def before(name, ev, skip_sanity=True):
    orig = getattr(M, name)

    def wrapper(self, *a, **kw):
        if not (skip_sanity and self.trainer.sanity_checking): event(ev, epoch=int(self.current_epoch))
        return orig(self, *a, **kw)
    setattr(M, name, wrapper)


def after(name, ev, skip_sanity=True):
    orig = getattr(M, name)

    def wrapper(self, *a, **kw):
        r = orig(self, *a, **kw)
        if not (skip_sanity and self.trainer.sanity_checking): event(ev, epoch=int(self.current_epoch))
        return r
    setattr(M, name, wrapper)


_training_step = M.training_step


def training_step(self, *a, **kw):
    if _first[0]:
        _first[0] = False
        event('first_step', epoch=int(self.current_epoch))
    return _training_step(self, *a, **kw)


M.training_step = training_step

# -- classification: record the per-subject validation output GaNDLF computed (see the docstring)
_samplers = {n: getattr(M, n) for n in ('_get_predictions_on_subject_using_label_sampler',
                                        '_get_predictions_on_subject_using_grid_sampler')}
_validation_step = M.validation_step
_on_validation_epoch_end = M.on_validation_epoch_end


def recording(orig):
    def wrapper(self, *a, **kw):
        r = orig(self, *a, **kw)
        if r[0].dim() == 2: self._probe_last_output = r[0].detach().cpu()  # (1, classes): classification/regression
        return r
    return wrapper


def validation_step(self, subject, *a, **kw):
    self._probe_last_output = None
    r = _validation_step(self, subject, *a, **kw)
    if self._probe_last_output is not None and not self.trainer.sanity_checking:
        self.__dict__.setdefault('_probe_rows', []).append((subject['subject_id'][0], self._probe_last_output[0]))
    return r


def on_validation_epoch_end(self, *a, **kw):
    rows = self.__dict__.pop('_probe_rows', [])
    if rows and not self.trainer.sanity_checking:
        classes = list(self.params['model']['class_list'])
        folder = os.path.join(self.output_dir, 'output_validation', f'epoch_{self.current_epoch}')
        os.makedirs(folder, exist_ok=True)
        lines = ['SubjectID,prediction,' + ','.join(f'output_{c}' for c in classes)]
        lines += [f'{sid},{classes[int(out.argmax())]},' + ','.join(f'{float(v):.6g}' for v in out.flatten())
                  for sid, out in rows]
        with open(os.path.join(folder, 'probe_predictions.csv'), 'w') as f: f.write('\n'.join(lines) + '\n')
    return _on_validation_epoch_end(self, *a, **kw)


for _n, _f in _samplers.items(): setattr(M, _n, recording(_f))
M.validation_step = validation_step
M.on_validation_epoch_end = on_validation_epoch_end
before('on_train_epoch_start', 'train_epoch_start')
before('on_validation_start', 'val_start')
after('on_validation_epoch_end', 'val_end')
after('on_train_epoch_end', 'train_epoch_end')
before('on_test_start', 'test_start', skip_sanity=False)
after('on_test_epoch_end', 'test_end', skip_sanity=False)

if __name__ == '__main__':
    try:
        gandlf(args=sys.argv[1:], prog_name='gandlf', standalone_mode=True)
    finally:
        event('exit')
