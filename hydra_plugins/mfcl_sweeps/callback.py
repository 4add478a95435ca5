"""`hydra/callbacks=mfcl`: registers the mfcl callback's config (the class lives in
`mfcl_sweeps.callbacks` and is imported only when Hydra instantiates it).

    python train.py --multirun lr=0.1,0.2 hydra/callbacks=mfcl
    python train.py --multirun lr=0.1,0.2 'hydra/callbacks=[mine,mfcl]'   # keep your own callbacks
    python train.py --multirun lr=0.1,0.2 hydra/callbacks=mfcl hydra.callbacks.mfcl.metric=val_loss
"""
from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore

from mfcl_sweeps.config import NotifyConf


@dataclass
class MfclCallbackConf:
    _target_: str = "mfcl_sweeps.callbacks.MfclCallback"
    report: bool = True  # write reports/ at the end of the multirun
    html: bool = True  # reports/index.html (self-contained page)
    plots: bool = True  # figures (PNG next to summary.md, SVG in index.html)
    metric: Optional[str] = None  # rank by this metric (default: the budget's target_metric, else found)
    mode: Optional[str] = None  # min | max (default: min for *loss/*error/*perplexity/*ppl)
    live: bool = True  # rewrite reports/index.html as runs finish (at most every live_interval_s)
    live_interval_s: float = 30.0
    notify: NotifyConf = field(default_factory=NotifyConf)  # under other sweepers; mfcl's: hydra.sweeper.notify


# the option's node sits under hydra.callbacks (the group's package), keyed by callback name
ConfigStore.instance().store(group="hydra/callbacks", name="mfcl", node={"mfcl": MfclCallbackConf},
                             provider="mfcl_sweeps")
