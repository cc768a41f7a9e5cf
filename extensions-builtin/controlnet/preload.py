"""sd-webui-controlnet's command-line flags (the built-in ControlNet reads the same ones)."""


def preload(parser):
    parser.add_argument("--controlnet-dir", type=str, default=None,
                        help="Path to a folder with more ControlNet models (scanned after models/ControlNet)")
    parser.add_argument("--controlnet-annotator-models-path", type=str, default=None,
                        help="Path to the folder with the preprocessors' weight files (annotator models)")
    parser.add_argument("--no-half-controlnet", action="store_true", default=False,
                        help="Run ControlNet models in 32-bit floats even when the checkpoint runs in 16 bits")
    parser.add_argument("--controlnet-preprocessor-cache-size", type=int, default=16,
                        help="How many preprocessor results to keep")
    parser.add_argument("--controlnet-loglevel", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help="ControlNet's log level")
    parser.add_argument("--controlnet-tracemalloc", action="store_true", default=False,
                        help="Accepted for compatibility; no effect")
