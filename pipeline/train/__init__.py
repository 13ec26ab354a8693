"""Stage 2: what heads read (data), how tasks score them (tasks, metrics), the shared loop
(loop), and the orchestration of `pipe train` (roles, run, rundir), which sits above heads/."""
