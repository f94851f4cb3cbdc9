"""ReconstructionWarning: a reconstruction's self-check found something a user must look at (exported as
``mspt.ReconstructionWarning`` and ``mspt.ptycho.ReconstructionWarning``). Filter it like any warning, e.g.
``warnings.simplefilter("error", mspt.ReconstructionWarning)`` to stop a pipeline on the first one."""


class ReconstructionWarning(UserWarning):
    """A self-check of a reconstruction failed; ``code`` names the check (e.g. "loss_diverging") and
    ``message`` says what was measured and what to check."""

    def __init__(self, code: str, message: str):
        super().__init__(code, message)  # both in args, so the warning pickles (e.g. from a Dask worker)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
