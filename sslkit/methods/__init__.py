"""Methods: the module that turns two views into what the loss compares (`StepOutput`),
chosen by the `method` config group, with a hook called after every optimizer step.
`siamese`: one network for both views (Barlow Twins, SimCLR, VICReg); `byol`: an online
network with a predictor and a moving-average target (BYOL, with its loss). What the
run calls on a backbone, a method and a loss: `Backbone`, `Method`, `Loss` (protocols)."""

from sslkit.methods.byol import BYOL, BYOLLoss
from sslkit.methods.protocol import Backbone, Loss, Method, check_part
from sslkit.methods.siamese import Siamese, StepOutput, check_loss

__all__ = ["BYOL", "BYOLLoss", "Backbone", "Loss", "Method", "Siamese", "StepOutput", "check_loss", "check_part"]
