"""The response normalisations' divisors of a trained checkpoint on its CIFAR-10 test images: median and 99th
percentile per layer (a divisor that stays at its floor k^beta is a constant, not a normalisation). For runs that
logged none (compile=true before the monitor validated eagerly).

    python benchmarks/lrn_divisors.py <run>/checkpoints/last.ckpt <cifar-10 archive or folder>
"""

import sys

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from alexnet_lab.callbacks import response_norms
from alexnet_lab.data import CIFAR10DataModule

ckpt = torch.load(sys.argv[1], weights_only=True, map_location="cpu")
rc = ckpt["hyper_parameters"]["run_config"]
net = instantiate(OmegaConf.create(rc["model"]))
net.load_state_dict({k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
net.eval()
d = dict(rc["data"])
d.pop("_target_")
d["path"] = sys.argv[2]
d["cache_dir"] = "/root/.cache/alexnet-lab"
dm = CIFAR10DataModule(**d)
dm.prepare_data()
dm.setup("test")
vals = {n: [] for n in response_norms(net)}
for n, m in response_norms(net).items():
    m.register_forward_hook(lambda mod, i, o, n=n: vals[n].append(mod.divisor(i[0]).flatten()[::7]))
with torch.no_grad():
    for x, y in dm.unaugmented_batches("test", torch.device("cpu")):
        net(x)
for n, v in vals.items():
    v = torch.cat(v)
    q = torch.quantile(v[:: max(1, v.numel() // 2_000_000)], torch.tensor([0.5, 0.99]))
    norm = response_norms(net)[n]
    print(f"{n}: median {q[0]:.4f}, p99 {q[1]:.4f}, floor k^beta {float(norm.k) ** norm.beta:.4f}")
