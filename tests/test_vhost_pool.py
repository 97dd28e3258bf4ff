"""The vhost pool: every vhost usable by the test user, used once, and gone afterwards."""

import aio_pika
import pytest

from activity_testing.rabbitmq import VhostPool, rabbitmqctl, vhost_of

pytestmark = pytest.mark.integration


def existing_vhosts() -> set[str]:
    return set(rabbitmqctl("list_vhosts", "--no-table-headers", "--quiet").split())


async def test_pool_vhosts_are_usable_once_and_all_deleted_after(vhost_pool: VhostPool) -> None:
    pool = VhostPool(vhost_pool.base_url, batch=3)
    try:
        handed_out = []
        for _ in range(2):
            with pool.vhost() as url:
                handed_out.append(vhost_of(url))
                connection = await aio_pika.connect(url)
                async with connection:
                    channel = await connection.channel()
                    await channel.declare_queue("left-behind", durable=True)
        made = set(pool.waiting) | set(handed_out)
        assert len(set(handed_out)) == 2
        assert len(made) == 3  # one batch: two handed out, one never used
    finally:
        pool.close()
    assert not made & existing_vhosts()
