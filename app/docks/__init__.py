"""Stave's dockable panels. Each is a QDockWidget with a fixed objectName (its class name),
a ``default_area`` and an empty-state message; the main window places and persists them.

Importing this package is light (no numpy, no pyqtgraph): the plot panels import those
when their plots are built, so the window can paint before they are loaded."""

from app.docks.breakers_dock import BreakersDock
from app.docks.checkpoints_dock import CheckpointsDock
from app.docks.health_dock import HealthDock
from app.docks.inspector_dock import InspectorDock
from app.docks.log_dock import LogDock
from app.docks.resources_dock import ResourcesDock

__all__ = ["BreakersDock", "CheckpointsDock", "HealthDock", "InspectorDock", "LogDock", "ResourcesDock"]
