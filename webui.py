"""The composition root: flags → runtime → one server with the Gradio UI and (with --api) the /sdapi/v1 API."""
from __future__ import annotations

import logging
import os
import sys
import threading

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # nothing reaches a model hub at run time
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from modules import cmd_args  # noqa: E402


def create_app(args):
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware

    from modules.runtime import Runtime

    rt = Runtime(args)
    from modules import extension_host
    extension_host.start(rt)   # extensions' scripts and settings exist before the API and the page are built
    app = FastAPI(title="Stable Diffusion web UI API", docs_url="/docs", openapi_url="/openapi.json")
    app.state.runtime = rt
    if args.cors_allow_origins or args.cors_allow_origins_regex:
        app.add_middleware(CORSMiddleware, allow_origins=(args.cors_allow_origins or "").split(",") if
                           args.cors_allow_origins else [], allow_origin_regex=args.cors_allow_origins_regex,
                           allow_methods=["*"], allow_headers=["*"], allow_credentials=True)
    if args.api:
        from modules.api import routes
        routes.mount(app, rt)
    demo = None
    if args.nowebui:
        extension_host.build_api_defaults()
    else:
        from modules.ui import app as ui_app
        from modules.ui import extra_networks, file_route, localization_ui
        localization_ui.mount_routes(app, rt, args.subpath)  # before Gradio's mount, which takes every path
        extra_networks.mount_routes(app, rt, args.subpath)
        file_route.mount(app, rt, args.subpath)
        _mount_reload_route(app, rt, args)
        demo = mount_ui(app, rt, args, ui_app.build(rt))
    extension_host.app_started(demo, app)
    return app, rt


def mount_ui(app, rt, args, demo):
    """Mounts a built page (gr.Blocks) at the root (or --subpath); returns it. The mount answers every path not
    routed before it."""
    import gradio as gr

    from modules.ui import app as ui_app
    from modules.ui import page_assets
    demo.queue(default_concurrency_limit=None)
    auth = _read_auth(args) if args.gradio_auth or args.gradio_auth_path else None
    gr.mount_gradio_app(app, demo, path=args.subpath or "/", auth=auth, css=ui_app.CSS, js=ui_app.JS,
                        head=page_assets.head(rt, args.subpath),
                        allowed_paths=[str(rt.paths.outputs)], footer_links=["api"] if args.api else [],
                        server_name=_host(args), server_port=args.port)
    app.state.demo = demo
    from modules import shared
    shared.demo = demo   # A1111's extensions reach the page object here
    return demo


def _mount_reload_route(app, rt, args) -> None:
    """POST /internal/reload-ui (Settings → Reload UI): re-runs the extensions' scripts with their callbacks cleared
    and replaces the page without restarting the process (A1111's "Reload UI"). Answers once the new page is
    mounted, so the browser reloads onto it."""
    import asyncio

    from modules import extension_host
    from modules.ui import app as ui_app
    lock = asyncio.Lock()

    async def reload_ui():
        async with lock:
            loop = asyncio.get_running_loop()

            def rebuild():
                extension_host.reload(rt, app)
                return ui_app.build(rt)
            demo = await loop.run_in_executor(None, rebuild)
            old = [r for r in app.router.routes if hasattr(getattr(r, "app", None), "get_blocks")]
            mount_ui(app, rt, args, demo)
            new = app.router.routes.pop()
            index = app.router.routes.index(old[-1]) if old else len(app.router.routes)
            app.router.routes[index:index + 1] = [new]     # the new page takes the old one's place
            new.app.get_blocks().run_startup_events()
            await new.app.get_blocks().run_extra_startup_events()
            extension_host.app_started(demo, app)
            return {"reloaded": True, "scripts": len(extension_host.scripts.scripts_data)}

    app.add_api_route(f"{args.subpath or ''}/internal/reload-ui", reload_ui, methods=["POST"])


def _read_auth(args) -> list[tuple[str, str]]:
    text = args.gradio_auth or ""
    if args.gradio_auth_path:
        with open(args.gradio_auth_path, encoding="utf-8") as f:
            text = ",".join(filter(None, [text, *[line.strip() for line in f]]))
    return [tuple(pair.split(":", 1)) for pair in text.replace("\n", ",").split(",") if ":" in pair]


def _host(args) -> str:
    return args.server_name or ("0.0.0.0" if args.listen else "127.0.0.1")


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args = cmd_args.parse(argv, preload=True)   # extensions' preload.py add their flags first
    except cmd_args.FlagError as exc:
        print(exc.code, file=sys.stderr)
        sys.exit(2)
    from modules import net_policy
    net_policy.configure(args.github_mirror)
    if args.share:
        print("--share needs the internet to reach gradio's share servers; it is not supported. Use --listen.",
              file=sys.stderr)
        sys.exit(2)
    import uvicorn
    app, rt = create_app(args)
    if not args.skip_load_model_at_start:
        # Load in the background so the page answers at once; generation requests queue behind the load.
        threading.Thread(target=_load_model, args=(rt,), daemon=True).start()
    host = _host(args)
    print(f"Running on local URL:  http://{'127.0.0.1' if host == '0.0.0.0' else host}:{args.port}", flush=True)
    uvicorn.run(app, host=host, port=args.port, log_level="warning", ssl_keyfile=args.tls_keyfile,
                ssl_certfile=args.tls_certfile)


def _load_model(rt) -> None:
    try:
        rt.load_startup_model()
    except Exception as exc:  # the server stays up; the UI shows the problem when the user generates
        logging.getLogger("sd").error("could not load the model at start: %s", exc)


if __name__ == "__main__":
    main()
