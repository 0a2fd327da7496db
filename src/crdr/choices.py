"""The names a training run chooses its losses and discriminator by, written once and torch-free.

What: the accepted values of the :class:`~crdr.train.config.TrainConfig` fields ``perceptual``,
``gan_loss``, ``discriminator``, ``beta_init`` and ``trainable``. Their builders (:class:`crdr.losses.PerceptualLoss`,
:func:`crdr.losses.gan_loss`, :func:`crdr.models.discriminator.build_discriminator`) import them
from here, select by them and re-export them; the config validates ``--set`` values against them.

Why here and not in ``losses.py`` / ``models/discriminator.py`` themselves: those modules import
torch at the top (their classes are ``nn.Module`` subclasses), and ``crdr.train.config`` must stay
torch-free so that the CLI's help and argument errors start without torch (style: Imports). A
name list of a dozen strings is the only part of them the config needs. A top-level module, so
that ``losses.py`` and ``models/`` need not import from the ``train`` package above them.
"""

from __future__ import annotations

__all__ = ["BETA_INITS", "DISCRIMINATOR_KINDS", "GAN_LOSS_NAMES", "PERCEPTUAL_KINDS", "TRAINABLE_PARTS"]

# crdr.losses.PerceptualLoss(kind)
PERCEPTUAL_KINDS = ("stlpips-alex", "lpips-alex")
# crdr.losses.gan_loss(name)
GAN_LOSS_NAMES = ("sgan", "rgan", "ragan", "hrrgan")
# crdr.models.discriminator.build_discriminator(kind)
DISCRIMINATOR_KINDS = ("independent", "shared", "hybrid")
# crdr.models.elic.ElicDecoder.reset_beta_parameters(scheme); "keep" leaves loaded ones alone
BETA_INITS = ("keep", "paper", "zero-projection")
# crdr.train.stages.trainable_parameters(part)
TRAINABLE_PARTS = ("all", "decoder", "beta")
