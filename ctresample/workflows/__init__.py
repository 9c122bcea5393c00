"""read -> (simulate) -> reconstruct -> write, for one study or a folder of studies.

Everything the ``simulate`` and ``reconstruct`` commands do is a call here:

>>> from ctresample.workflows import ReconSettings, SimulationSettings, run_reconstruct, run_simulate
>>> run_simulate("data/sample_ct", "out/sim", SimulationSettings(views=25, noise="gaussian:0.01"))
>>> run_reconstruct("out/sim", "out/recon", ReconSettings(method="fbp"))

=================  ===========================================================================
module             what
=================  ===========================================================================
``settings``       :class:`SimulationSettings`, :class:`ReconSettings`
``studies``        study discovery (:func:`discover_studies`), :class:`Study`, :class:`StudyResult`
``subjects``       the CT collection root and the subject split
``preprocess``     padding clip and resampling onto the model grid
``simulation``     noise models and :func:`simulate_sinogram`
``simulate``       the ``simulate`` workflow of one study
``reconstruct``    the ``reconstruct`` workflow of one study
``store``          the resume store: settings claims, fingerprints, locks (one run per folder)
``record``         what ``<method>.run.json`` keeps of a method's info (scalars, not images)
``preview``        ``<method>_preview.jpg`` and the metrics against the ground truth
``distributed``    the split of the work over processes
``runner``         many studies, logging, the summary
=================  ===========================================================================

Determinism and resume
----------------------
Slices are processed in fixed batches ``[0, B), [B, 2B), ...`` (``B = batch_size``). Batch
``b`` draws its randomness from a generator seeded with ``(seed, first slice of b)``, and the
simulated noise of slice ``k`` from ``(seed, k)``, so a result does not depend on which
process computed it, nor on which slices an earlier, interrupted run had finished. A rerun
skips every batch whose slices are all written, and writes the remaining ones.

Scale-out
---------
Under ``torchrun``/``accelerate launch`` (``RANK``/``WORLD_SIZE`` in the environment, or an
initialised ``torch.distributed``), every process walks the same list of studies and takes
batches ``b`` with ``b % world_size == rank``; it writes only those slices. No collective
calls are needed: the process that finishes a study's last slice (seen on the shared output
folder) assembles the NIfTI volumes, and the last process to finish writes the summary.
The output folder must be on a file system all processes see.
"""
from .distributed import dist_info
from .reconstruct import reconstruct_study
from .runner import configure_logging, run_reconstruct, run_simulate
from .settings import FORMATS, ReconSettings, SimulationSettings
from .simulate import simulate_study
from .simulation import NoiseSpec, add_noise, parse_noise, simulate_sinogram
from .studies import Study, StudyResult, discover_studies

__all__ = [
    "FORMATS",
    "NoiseSpec",
    "ReconSettings",
    "SimulationSettings",
    "Study",
    "StudyResult",
    "add_noise",
    "configure_logging",
    "discover_studies",
    "dist_info",
    "parse_noise",
    "reconstruct_study",
    "run_reconstruct",
    "run_simulate",
    "simulate_sinogram",
    "simulate_study",
]
