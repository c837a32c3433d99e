"""Train the config given on the command line with medlab.train: started by tests/test_ddp.py under torchrun."""
import sys

import torch

import medlab

torch.set_num_threads(1)  # two processes on two cores
result = medlab.train(medlab.load_config(sys.argv[1]))
print('rank result', result.best_epoch, result.epochs_run)
