"""`python -m services.bpjs_simulator`: serve the fake BPJS gateway with uvicorn."""

import logging

import uvicorn

from services.bpjs_simulator.app import create_app
from services.bpjs_simulator.config import SimulatorSettings
from shared.config import load_settings, refuse_to_start

SERVICE = "bpjs-simulator"


def main() -> None:
    settings = load_settings(SimulatorSettings, SERVICE)
    if settings.app_env == "production":  # also the default: APP_ENV must say dev or test
        refuse_to_start(SERVICE, "APP_ENV is production (the simulator is for dev and tests)")
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        # A request held by the "hang" fault must not delay shutdown.
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
