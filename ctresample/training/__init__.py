"""Training: one loop (accelerate, diffusers ``EMAModel``), per-model trainers, data.

``loop``         :class:`~.loop.TrainRunConfig`, :func:`~.loop.train_loop`, EMA, checkpoints
``data``         the slice cache of a split, augmentation, :class:`~.data.SliceDataset`
``autoencoder``  the slice autoencoder of the prior
``diffusion``    the latent denoising UNet of the prior
``fbp_unet``     the FBP-UNet baseline network
``model_card``   the prior's measured model card

Each trainer is a function ``train_<target>(config, resume=False, **overrides) -> summary``,
run by ``ctresample train <target>``; modules import accelerate and diffusers when used.
"""
