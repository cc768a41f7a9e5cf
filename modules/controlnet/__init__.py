"""ControlNet built in (issue #18), with sd-webui-controlnet's interface: units, preprocessors, the control models,
the sampling hook and the extension's HTTP routes' cores. Engine level: imports torch, numpy, cv2, PIL, diffusers,
modules.engine and modules.models, never a face (modules.ui, modules.api) or a web framework; the built-in extension
(extensions-builtin/controlnet/) wires it to A1111's Script interface. /work/shared/CONTROLNET-REFERENCE.md is the
fact sheet the code follows (its § numbers are cited in docstrings)."""
