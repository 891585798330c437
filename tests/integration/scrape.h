/*
 * scrape.h - reading tokenwatch's /metrics in integration tests.
 */
#ifndef TOKENWATCH_TEST_SCRAPE_H
#define TOKENWATCH_TEST_SCRAPE_H

#include <stdbool.h>

/* The value of one series ("name" or "name{labels}") on 127.0.0.1:port's
 * /metrics, or NAN when it is not there. */
double fx_metric(int port, const char *series);

/* Waits until the series has the value; false on timeout. */
bool fx_wait_metric(int port, const char *series, double want, int timeout_ms);

#endif
