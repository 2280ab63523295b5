"""The study apps' shared library: a trained model opened for study (``session``), shape specs resolved
to latent vectors and real shapes (``specs``), and what the apps write (``outputs``). The apps
themselves are ``experiments/{generate,interpolate,arithmetic,invert,tsne}.py``."""

from voxgan.study.outputs import (
    OUTPUT_FORMATS,
    RESULT_COLOR,
    SHAPE_FILE_BYTES,
    TARGET_COLOR,
    VIEWER_SHAPES,
    StudyRun,
    binary_grids,
    save_figure,
    save_json,
    save_npz,
    save_shapes,
    study_run,
)
from voxgan.study.session import (
    App,
    Classifier,
    InversionConfig,
    Study,
    StudyConfig,
    category_color,
    check_config,
    run_app,
)
from voxgan.study.specs import (
    SPEC_FORMS,
    Operand,
    RealShapes,
    check_operands,
    load_real,
    procedural_shapes,
    resolve_operands,
)

__all__ = [
    "App",
    "Classifier",
    "InversionConfig",
    "OUTPUT_FORMATS",
    "Operand",
    "RESULT_COLOR",
    "RealShapes",
    "SHAPE_FILE_BYTES",
    "SPEC_FORMS",
    "Study",
    "StudyConfig",
    "StudyRun",
    "TARGET_COLOR",
    "VIEWER_SHAPES",
    "binary_grids",
    "category_color",
    "check_operands",
    "check_config",
    "load_real",
    "procedural_shapes",
    "resolve_operands",
    "run_app",
    "save_figure",
    "save_json",
    "save_npz",
    "save_shapes",
    "study_run",
]
