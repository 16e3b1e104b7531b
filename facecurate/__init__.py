"""facecurate: keyword image searches to a clean, documented face dataset.

The typed Python surface (see :mod:`facecurate.api`)::

    import facecurate

    with facecurate.open("faces") as project:
        project.run(progress=True)
        frame = project.manifest_frame()
"""

__version__ = "0.1.0"

from facecurate.api import Project, init, open
from facecurate.catalog import Decision, State
from facecurate.errors import FacecurateError
from facecurate.events import SILENT, Failure, Progress

__all__ = ["SILENT", "Decision", "FacecurateError", "Failure", "Progress", "Project", "State", "__version__", "init",
           "open"]
