#include <criterion/criterion.h>
#include <string.h>

#include "tokenwatch/shards.h"

#define T0 1700000000u

Test(shards, list_shards_hosts_split_into_set_and_hosts)
{
    static const struct {
        const char *host, *set, *hosts;
        bool ok;
    } cases[] = {
        {"shard0/h1:27018,h2:27018", "shard0", "h1:27018,h2:27018", true},
        {"rs-a/localhost:40001", "rs-a", "localhost:40001", true},
        {"standalone:27018", "", "standalone:27018", true},
        {"/h1:27018", "", "", false},
        {"shard0/", "", "", false},
        {"", "", "", false},
    };

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char set[TW_SHARD_NAME_MAX], hosts[TW_SHARD_HOSTS_MAX];
        tw_error_t err;
        bool ok = tw_shard_host_split(cases[k].host, set, sizeof set, hosts, sizeof hosts, &err);

        cr_expect_eq(ok, cases[k].ok, "%s", cases[k].host);
        if (ok && cases[k].ok) {
            cr_expect_str_eq(set, cases[k].set);
            cr_expect_str_eq(hosts, cases[k].hosts);
        }
    }
}

Test(shards, a_set_name_too_long_is_refused_not_cut)
{
    char set[8], hosts[TW_SHARD_HOSTS_MAX];
    tw_error_t err;

    cr_expect_not(tw_shard_host_split("averylongname/h:1", set, sizeof set, hosts, sizeof hosts,
                                      &err));
}

Test(shards, an_override_is_found_by_its_exact_name)
{
    const char *const list[] = {"shard1=mongodb://a:1/?replicaSet=shard1",
                                "shard10=mongodb://b:2/?replicaSet=shard10"};

    cr_expect_str_eq(tw_shard_override(list, 2, "shard1"), "mongodb://a:1/?replicaSet=shard1");
    cr_expect_str_eq(tw_shard_override(list, 2, "shard10"), "mongodb://b:2/?replicaSet=shard10");
    cr_expect_null(tw_shard_override(list, 2, "shard"));
    cr_expect_null(tw_shard_override(list, 0, "shard1"));
}

Test(shards, the_uri_keeps_the_routers_credentials_and_options)
{
    tw_error_t err;
    mongoc_uri_t *uri = tw_shard_uri(
        "mongodb://tw:s%40cret@router:27017/orders?authSource=admin&tls=true"
        "&appname=cdc&replicaSet=ignored",
        "shard0", "h1:27018,h2:27018", &err);
    const mongoc_host_list_t *h;

    cr_assert(uri, "%s", err.message);
    cr_expect_str_eq(mongoc_uri_get_username(uri), "tw");
    cr_expect_str_eq(mongoc_uri_get_password(uri), "s@cret");
    cr_expect_str_eq(mongoc_uri_get_auth_source(uri), "admin");
    cr_expect_str_eq(mongoc_uri_get_database(uri), "orders");
    cr_expect_str_eq(mongoc_uri_get_replica_set(uri), "shard0");
    cr_expect(mongoc_uri_get_tls(uri));
    cr_expect_str_eq(mongoc_uri_get_appname(uri), "cdc");
    cr_expect_eq(mongoc_uri_get_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 0),
                 5000, "a short timeout of its own");
    h = mongoc_uri_get_hosts(uri);
    cr_assert(h);
    cr_expect_str_eq(h->host_and_port, "h1:27018");
    cr_assert(h->next);
    cr_expect_str_eq(h->next->host_and_port, "h2:27018");
    mongoc_uri_destroy(uri);
}

Test(shards, a_given_timeout_is_kept)
{
    tw_error_t err;
    mongoc_uri_t *uri = tw_shard_uri("mongodb://router/?serverSelectionTimeoutMS=900", "s",
                                     "h:1", &err);

    cr_assert(uri);
    cr_expect_eq(mongoc_uri_get_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 0),
                 900);
    mongoc_uri_destroy(uri);
}

static tw_shard_t shard(const char *name, uint32_t oldest, uint32_t newest, bool readable)
{
    tw_shard_t s;

    memset(&s, 0, sizeof s);
    snprintf(s.name, sizeof s.name, "%s", name);
    s.readable = readable;
    s.window.oldest = (tw_ctime_t){oldest, 1};
    s.window.newest = (tw_ctime_t){newest, 1};
    return s;
}

Test(shards, the_edge_is_the_shard_whose_history_begins_last)
{
    tw_shard_t list[] = {
        shard("shard0", T0 - 3600, T0, true),
        shard("shard1", T0 - 1800, T0, true), /* the edge */
        shard("shard2", T0 - 7200, T0, true),
    };
    size_t edge = 99;

    cr_assert(tw_shards_edge(list, 3, &edge));
    cr_expect_eq(edge, 1);
    list[1].readable = false;
    cr_assert(tw_shards_edge(list, 3, &edge));
    cr_expect_eq(edge, 0, "among the readable ones");
    list[0].readable = list[2].readable = false;
    cr_expect_not(tw_shards_edge(list, 3, &edge));
}

Test(shards, on_a_tie_the_smaller_window_is_the_edge)
{
    tw_shard_t list[] = {
        shard("shard0", T0 - 1800, T0, true),
        shard("shard1", T0 - 1800, T0 - 60, true), /* a quiet shard */
    };
    size_t edge = 99;

    cr_assert(tw_shards_edge(list, 2, &edge));
    cr_expect_eq(edge, 1);
}
