"""`hydra/callbacks=mfcl`: registers the mfcl callback's config (the class lives in
`mfcl_sweeps.callbacks` and is imported only when Hydra instantiates it).

    python train.py --multirun lr=0.1,0.2 hydra/callbacks=mfcl
    python train.py --multirun lr=0.1,0.2 'hydra/callbacks=[mine,mfcl]'   # keep your own callbacks
    python train.py --multirun lr=0.1,0.2 hydra/callbacks=mfcl hydra.callbacks.mfcl.html=true
"""
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class MfclCallbackConf:
    _target_: str = "mfcl_sweeps.callbacks.MfclCallback"
    report: bool = True  # write reports/ at the end of the multirun
    html: bool = False  # also reports/summary.html
    plots: bool = True  # PNG plots next to summary.md
    metric: str = "accuracy"  # target metric for runs whose budget names none


# the option's node sits under hydra.callbacks (the group's package), keyed by callback name
ConfigStore.instance().store(group="hydra/callbacks", name="mfcl", node={"mfcl": MfclCallbackConf},
                             provider="mfcl_sweeps")
