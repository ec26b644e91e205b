"""The one error type the KD engine raises for problems a user can fix."""


class DistillError(ValueError):
    """A user-caused problem (bad file, bad shape, bad config, divergence).

    The message is a full sentence saying what is wrong and what to do; workers
    store it on the job as is.
    """
