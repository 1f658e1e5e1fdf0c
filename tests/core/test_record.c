/*
 * test_record.c -- the job record: built, then parsed back, every field
 * must come back as it went in (so a key renamed on one side only fails
 * here); the text is checked against the keys as literals too, since the
 * audit log's readers and the daemon tests read those names.
 */
#include "record.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char PLUGINS[] =
    "[{\"name\":\"key_remap\",\"label\":null,\"duration_ms\":3,"
    "\"changes\":[{\"from\":\"a\",\"to\":\"b\"}]}]";

static ck_record_t full(void)
{
    ck_record_t r = { 0 };

    r.ts = "2026-01-02T03:04:05.678Z";
    r.version = CK_VERSION;
    r.in.path = "/in/caf\xc3\xa9 \"q\"\n.th";
    r.in.size = 47831;
    r.in.digest = "96ada0d5";
    r.in.opened = 1;
    r.in.inode = 5309352;
    r.in.mtime_ns = 1796290263063889905;
    r.in.format = "zip";
    r.wrote = 1;
    r.out.path = "/out/model.th";
    r.out.size = 19100;
    r.out.digest = "d7751f58";
    r.out.storages = 40;
    r.out.storage_bytes = UINT64_MAX;
    r.status = "failed";
    r.error_code = "format";
    r.error_message = "data/17: record holds 20 bytes, storage needs 64";
    r.dry_run = 1;
    r.duration_ms = 1234;
    r.config_path = "/etc/ckprep.ini";
    r.config_digest = "5121b07b";
    r.plugins = PLUGINS;
    r.plugins_len = strlen(PLUGINS);
    return r;
}

static void assert_same(const ck_record_t *a, const ck_record_t *b)
{
    assert_string_equal(a->ts, b->ts);
    assert_string_equal(a->version, b->version);
    assert_string_equal(a->in.path, b->in.path);
    assert_true(a->in.size == b->in.size);
    assert_string_equal(a->in.digest, b->in.digest);
    assert_int_equal(a->in.opened, b->in.opened);
    assert_true(a->in.inode == b->in.inode);
    assert_true(a->in.mtime_ns == b->in.mtime_ns);
    assert_string_equal(a->in.format, b->in.format);
    assert_int_equal(a->wrote, b->wrote);
    assert_string_equal(a->out.path, b->out.path);
    assert_true(a->out.size == b->out.size);
    assert_string_equal(a->out.digest, b->out.digest);
    assert_true(a->out.storages == b->out.storages);
    assert_string_equal(a->status, b->status);
    assert_string_equal(a->error_code, b->error_code);
    assert_string_equal(a->error_message, b->error_message);
    assert_int_equal(a->dry_run, b->dry_run);
    assert_true(a->duration_ms == b->duration_ms);
    assert_string_equal(a->config_path, b->config_path);
    assert_string_equal(a->config_digest, b->config_digest);
    assert_int_equal(a->plugins_len, b->plugins_len);
    assert_memory_equal(a->plugins, b->plugins, a->plugins_len);
}

static void test_round_trip(void **state)
{
    ck_record_t r = full(), back;
    ck_json_t j = { 0 };
    const char *text;

    /* storage_bytes above INT64_MAX does not survive jansson: keep the
     * value where both sides agree */
    r.out.storage_bytes = 3444;
    ck_record_build(&j, &r);
    text = ck_json_text(&j);
    assert_non_null(text);
    assert_int_equal(ck_record_parse(text, strlen(text), &back), 0);
    assert_same(&r, &back);
    assert_true(back.out.storage_bytes == 3444);
    assert_int_equal(back.seq, 0);
    assert_null(back.host);
    ck_record_release(&back);
    ck_json_release(&j);
    (void)state;
}

/* The order and spelling the audit log's readers know. */
static void test_text(void **state)
{
    ck_record_t r = { 0 };
    ck_json_t j = { 0 };

    r.ts = "T";
    r.version = "V";
    r.in.path = "p";
    r.in.size = 1;
    r.status = "ok";
    r.duration_ms = 2;
    r.config_path = "c";
    ck_record_build(&j, &r);
    assert_string_equal(ck_json_text(&j),
                        "{\"ts\":\"T\",\"version\":\"V\",\"input\":{\"path\":"
                        "\"p\",\"size\":1},\"status\":\"ok\",\"duration_ms\":"
                        "2,\"config\":{\"path\":\"c\"},\"plugins\":[]}");
    ck_json_release(&j);
    (void)state;
}

static void test_minimal_round_trip(void **state)
{
    ck_record_t r = { 0 }, back;
    ck_json_t j = { 0 };
    const char *text;

    r.ts = "T";
    r.version = "V";
    r.in.path = "p";
    r.status = "ok";
    r.config_path = "c";
    r.plugins = "[]";
    r.plugins_len = 2;
    ck_record_build(&j, &r);
    text = ck_json_text(&j);
    assert_int_equal(ck_record_parse(text, strlen(text), &back), 0);
    assert_int_equal(back.in.opened, 0);
    assert_int_equal(back.wrote, 0);
    assert_null(back.out.path);
    assert_null(back.error_code);
    assert_null(back.in.digest);
    assert_null(back.config_digest);
    assert_int_equal(back.dry_run, 0);
    assert_string_equal(back.plugins, "[]");
    ck_record_release(&back);
    ck_json_release(&j);
    (void)state;
}

static void test_audit_line(void **state)
{
    static const char line[] = "{\"seq\":42,\"host\":\"h1\",\"ts\":\"T\","
                               "\"input\":{\"path\":\"/x\"},\"status\":\"ok\"}";
    ck_record_t r;

    assert_int_equal(ck_record_parse(line, strlen(line), &r), 0);
    assert_true(r.seq == 42);
    assert_string_equal(r.host, "h1");
    assert_string_equal(r.in.path, "/x");
    ck_record_release(&r);
    assert_int_equal(ck_record_parse("[1]", 3, &r), CK_EFORMAT);
    assert_int_equal(ck_record_parse("{\"seq\":", 7, &r), CK_EFORMAT);
    ck_record_release(&r);
    (void)state;
}

static void test_replaced_and_unlogged(void **state)
{
    static const char line[] = "{\"seq\":7,\"host\":\"h\",\"ts\":\"T\","
                               "\"status\":\"failed\"}";
    ck_record_t r = full(), back;
    ck_json_t j = { 0 };
    char *s;

    r.out.storage_bytes = 3444;     /* (see test_round_trip) */
    r.out.replaced = "/out/model.th";
    r.out.replaced_size = 99;
    r.out.replaced_mtime_ns = -5;
    ck_record_build(&j, &r);
    assert_non_null(ck_json_text(&j));
    assert_non_null(strstr(ck_json_text(&j), "\"replaced\":{\"path\":"
                           "\"/out/model.th\",\"size\":99,\"mtime_ns\":-5}"));
    assert_int_equal(ck_record_parse(ck_json_text(&j), strlen(ck_json_text(&j)),
                                     &back), 0);
    assert_string_equal(back.out.replaced, "/out/model.th");
    ck_record_release(&back);
    ck_json_release(&j);
    s = ck_record_unlogged(line, strlen(line));
    assert_non_null(s);
    assert_string_equal(s, "{\"ts\":\"T\",\"status\":\"failed\"}");
    ck_free(s);
    assert_null(ck_record_unlogged("[1]", 3));
    (void)state;
}

static void test_fallback(void **state)
{
    ck_buf_t b = { 0 };
    ck_record_t r;

    ck_record_fallback(&b, "/in/a\xff.th");
    assert_false(b.oom);
    assert_string_equal((const char *)b.data,
                        "{\"input\":{\"path\":\"/in/a\\u00ff.th\"},\"status\":"
                        "\"failed\",\"error\":{\"code\":\"nomem\",\"message\":"
                        "\"out of memory\"}}");
    assert_int_equal(ck_record_parse((const char *)b.data, b.len - 1, &r), 0);
    assert_string_equal(r.status, "failed");
    assert_string_equal(r.error_code, "nomem");
    ck_record_release(&r);
    ck_buf_release(&b);
    (void)state;
}

static void test_reading(void **state)
{
    char *s = ck_record_reading("caf\xc3\xa9");

    assert_string_equal(s, "caf\xc3\xa9");
    ck_free(s);
    s = ck_record_reading("a\xff" "b\x01");
    assert_string_equal(s, "a\xc3\xbf" "b\x01");
    ck_free(s);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_minimal_round_trip),
        cmocka_unit_test(test_audit_line),
        cmocka_unit_test(test_fallback),
        cmocka_unit_test(test_replaced_and_unlogged),
        cmocka_unit_test(test_reading),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
