from conftest import base_url


async def test_one_request(backends, balancer, http):
    a = await backends("a")
    bal = await balancer([{"name": "a", "url": a.url, "weight": 1}])
    async with http.post(base_url(bal) + "/v1/chat/completions", json={"model": "standin-model"}) as r:
        assert r.status == 200
        assert (await r.json())["backend"] == "a"
        assert r.headers["X-Edgewasm-Backend"] == "a"
