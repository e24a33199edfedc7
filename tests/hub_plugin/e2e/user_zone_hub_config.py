"""The packaged demo config with nbguard's user zone switched on as a wheel install does.

A wheel puts two data files into the environment: ``etc/jupyter/.../nbguard.json``
(every server loads the server extension) and ``etc/ipython/ipython_kernel_config.json``
(every kernel loads the hooks). The test suite's editable install has neither,
on purpose: the kernel-hook tests start kernels with and without the hooks. So
this config points the users' servers at the repository's copies of the very
same files, through ``JUPYTER_CONFIG_PATH`` and an ``IPYTHONDIR`` holding the
kernel config, and changes nothing else.
"""

import shutil
from pathlib import Path

from nbguard.cli.demo import DemoState
from nbguard.hub_plugin import demo

c = get_config()  # noqa: F821 (traitlets defines get_config for config files)
load_subconfig(str(Path(demo.__file__).with_name("jupyterhub_config.py")))  # noqa: F821

ROOT = Path(__file__).resolve().parents[3]
ipython_dir = DemoState.from_environ().root / "ipython"
profile = ipython_dir / "profile_default"
profile.mkdir(parents=True, exist_ok=True)
shutil.copy(ROOT / "etc" / "ipython" / "ipython_kernel_config.json", profile)
c.Spawner.environment.update(
    {"JUPYTER_CONFIG_PATH": str(ROOT / "etc" / "jupyter"), "IPYTHONDIR": str(ipython_dir)}
)
