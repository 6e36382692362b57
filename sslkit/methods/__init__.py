"""Methods: the module that turns two views into what the loss compares (`StepOutput`),
chosen by the `method` config group, with a hook called after every optimizer step."""

from sslkit.methods.siamese import Siamese, StepOutput, check_loss

__all__ = ["Siamese", "StepOutput", "check_loss"]
