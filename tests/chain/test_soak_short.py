"""A short soak (tests/soak/soak.py): 100 deliveries, 16 at a time, each against a random
fault of the matrix, a fifth of them over STARTTLS (when tlsc-io is installed) with a
random case of the TLS matrix. The seed is random and printed: rerun a failure with
`tests/soak/soak.py -n 100 --tls-share=0.2 --seed SEED`."""

import os
import random

from tests.soak.soak import soak


def test_soak_short(installed, tmp_path):
    seed = int(os.environ.get("QREMOTE_SOAK_SEED", random.randrange(1 << 32)))
    tls_share = 0.2 if os.path.exists(os.path.join(installed, "tlsc-io")) else 0.0
    result = soak(installed, str(tmp_path), deliveries=100, parallel=16, seed=seed, timeout=1, log=lambda _: None,
                  check_growth=False,  # 100 deliveries are all warm-up for the allocator
                  tls_share=tls_share)
    print(result.summary())
    assert result.deliveries == 100
    assert result.ok, result.summary()
