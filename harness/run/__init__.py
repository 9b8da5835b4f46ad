"""Running a sweep, parent process: the run folder (``rundir``, its one owner), the environment
(``env``), one worker process per point (``runner``; started by ``launcher``, forked warm from
``forkserver``), where rounds run (``schedule``: one at a time, on ``devices`` at once, or as
``slurm`` jobs), and CI gating (``gate``).
"""
