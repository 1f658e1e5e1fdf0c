#!/usr/bin/python3
"""Make tests/data/sample.th: a small AudioCraft-shaped training checkpoint,
written by real torch.save.  Run with /usr/bin/python3 (python3-torch and
python3-omegaconf); the committed file was made by this script."""
import collections
import sys

import torch
from omegaconf import OmegaConf


class TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.ModuleList(torch.nn.Embedding(8, 6) for _ in range(2))
        self.transformer = torch.nn.TransformerEncoder(
            torch.nn.TransformerEncoderLayer(6, 2, 12), 1)
        self.out_norm = torch.nn.LayerNorm(6)
        self.linears = torch.nn.ModuleList(torch.nn.Linear(6, 8) for _ in range(2))


def main(path):
    torch.manual_seed(0)
    cfg = OmegaConf.create({
        'sample_rate': 32000,
        'channels': 1,
        'optim': {'lr': 1e-4, 'optimizer': 'adamw', 'epochs': 10,
                  'adam': {'betas': [0.9, 0.95], 'weight_decay': 0.1}},
        'dataset': {'batch_size': 8, 'segment_duration': 30,
                    'train': {'path': '/data/train', 'num_samples': 1000},
                    'valid': {'path': '/data/valid'}},
        'transformer_lm': {'dim': 6, 'num_heads': 2, 'card': 8},
        'conditioners': {'description': {'model': 't5', 't5': {'name': 't5-base'}}},
        'generate': {'lm': {'use_sampling': True, 'top_k': 250}},
        'sampling_rate_ref': '${sample_rate}',
        'solver': 'musicgen',
        'continue_from': '???',
    })
    OmegaConf.set_struct(cfg, True)
    model = TinyLM()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.randn(3, 6)) if False else None
    loss = sum(p.sum() for p in model.parameters())
    loss.backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 5)
    state = model.state_dict()
    best = {k: v.detach().clone().half() for k, v in state.items()}
    ema = {k: v.detach().clone() for k, v in state.items()}
    ckpt = {
        'history': [{'train': {'loss': 3.1, 'ce': 3.0},
                     'valid': {'loss': 3.2, 'ce': 3.1}}],
        'xp.cfg': cfg,
        'xp.sig': '9f3a1c2b',
        'best_state': {'model': best},
        'fsdp_best_state': {},
        'model': state,
        'optimizer': opt.state_dict(),
        'lr_scheduler': sched.state_dict(),
        'ema': {'state': collections.defaultdict(dict, {'model': ema}),
                'count': 3.0},
    }
    torch.save(ckpt, path)


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'tests/data/sample.th')
