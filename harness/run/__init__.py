"""Running a sweep, parent process: the run folder (``rundir``, its one owner), the environment
(``env``), one worker process per point (``runner``), and CI gating (``gate``).
"""
