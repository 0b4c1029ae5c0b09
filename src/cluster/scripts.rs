//! The Lua scripts that make each shared operation atomic. Job keys are `{prefix}:job:ID`, the
//! index of tracked jobs (by submission time) is the sorted set `{prefix}:jobs`; a job taken out
//! (ended, expired, evicted) leaves a tombstone `{prefix}:ended:ID` for as long as its record
//! would have lived, so that a replica writing back jobs Redis lost never revives an ended one.

use std::sync::LazyLock;

use redis::Script;

/// Tracks a job unless it is tracked already; evicts the oldest beyond the cap.
/// KEYS: job key, index. ARGV: value, key lifetime ms, submitted ms, id, max tracked, job key
/// prefix, tombstone prefix. Returns `["1"|"0", evicted values…]`.
pub(super) static TRACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'0'} end
        redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
        local out = {'1'}
        local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
        if over > 0 then
          local oldest = redis.call('ZPOPMIN', KEYS[2], over)
          for i = 1, #oldest, 2 do
            local k = ARGV[6] .. oldest[i]
            local v = redis.call('GET', k)
            if v then
              redis.call('DEL', k)
              redis.call('SET', ARGV[7] .. oldest[i], '1', 'PX', ARGV[2])
              table.insert(out, v)
            end
          end
        end
        return out
        ",
    )
});

/// A job's value; with ARGV[2] = 1 also deleted, leaving its tombstone (get-and-delete: one
/// caller ends it). The tombstone holds the ending caller's token and the value, so that a caller
/// asking again (its first answer lost: a timeout, Redis stalled) still gets the job it ended.
/// A job Redis lost (no record, no tombstone) is the caller's shadow of it, when it has one.
/// KEYS: job key, index, tombstone. ARGV: id, end (0|1), tombstone lifetime ms, the caller's
/// shadow value or "", the end's token.
pub(super) static FETCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local v = redis.call('GET', KEYS[1])
        if not v then
          local t = redis.call('GET', KEYS[3])
          if t then
            local mine = ARGV[2] == '1' and ARGV[5] ~= '' and string.sub(t, 1, #ARGV[5] + 1) == ARGV[5] .. '\n'
            if mine then return string.sub(t, #ARGV[5] + 2) end
            return false
          end
          if ARGV[4] == '' then return false end
          v = ARGV[4]
        end
        if ARGV[2] == '1' then
          redis.call('DEL', KEYS[1])
          redis.call('ZREM', KEYS[2], ARGV[1])
          redis.call('SET', KEYS[3], ARGV[5] .. '\n' .. v, 'PX', ARGV[3])
        end
        return v
        ",
    )
});

/// Takes out the jobs submitted before a cutoff, leaving their tombstones. KEYS: index. ARGV:
/// cutoff ms, job key prefix, limit, tombstone prefix, tombstone lifetime ms. Returns the values of
/// the jobs it deleted (ids already ended leave nothing).
pub(super) static SWEEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
        local out = {}
        for _, id in ipairs(ids) do
          redis.call('ZREM', KEYS[1], id)
          local k = ARGV[2] .. id
          local v = redis.call('GET', k)
          if v then
            redis.call('DEL', k)
            redis.call('SET', ARGV[4] .. id, '1', 'PX', ARGV[5])
            table.insert(out, v)
          end
        end
        return out
        ",
    )
});

/// The marker of Redis's data: set when missing. KEYS: marker. ARGV: a new value. Returns the
/// marker's value (the new one when it was missing: Redis lost what it held, or is new).
pub(super) static MARK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local v = redis.call('GET', KEYS[1])
        if v then return v end
        redis.call('SET', KEYS[1], ARGV[1])
        return ARGV[1]
        ",
    )
});

/// Writes back the jobs Redis lost. KEYS: index. ARGV: job key prefix, tombstone prefix, key
/// lifetime ms, then `id, submitted ms, value` for each job. Returns, for each: 0 tracked, 1 ended
/// (a tombstone), 2 written back.
pub(super) static RESTORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local out = {}
        for i = 4, #ARGV, 3 do
          local id = ARGV[i]
          if redis.call('EXISTS', ARGV[1] .. id) == 1 then
            table.insert(out, 0)
          elseif redis.call('EXISTS', ARGV[2] .. id) == 1 then
            table.insert(out, 1)
          else
            redis.call('SET', ARGV[1] .. id, ARGV[i + 2], 'PX', ARGV[3])
            redis.call('ZADD', KEYS[1], ARGV[i + 1], id)
            table.insert(out, 2)
          end
        end
        return out
        ",
    )
});

/// Takes the lease if nobody holds it, with a new fencing epoch (above the last this replica
/// knew, should Redis have lost its counter). KEYS: lease, epoch counter. ARGV: replica, ttl ms,
/// the last epoch known. Returns `replica#epoch`, or nil.
pub(super) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[1]) == 1 then return false end
        local e = redis.call('INCR', KEYS[2])
        if e <= tonumber(ARGV[3]) then
          e = tonumber(ARGV[3]) + 1
          redis.call('SET', KEYS[2], e)
        end
        local v = ARGV[1] .. '#' .. e
        redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
        return v
        ",
    )
});

/// Extends the lease if this holder still has it, or takes it back if nobody does (Redis lost
/// it: restarted empty), restoring the epoch counter. KEYS: lease, epoch counter. ARGV: value
/// held, ttl ms, its epoch. Returns 1, or 0 when another holds it.
pub(super) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local v = redis.call('GET', KEYS[1])
        if v == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
        if v then return 0 end
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
        if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[3]) then redis.call('SET', KEYS[2], ARGV[3]) end
        return 1
        ",
    )
});

/// Gives the lease up if this holder still has it. KEYS: lease. ARGV: value held.
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        ",
    )
});

/// Records one delivery of a waiting webhook. KEYS: the run's hash (`{prefix}:hook:TOKEN`).
/// ARGV: the payload's `track_id` (empty when it carried none). Returns nil when no run waits
/// for it (or the track id is another's), else `[probe, deliveries so far, finished ms or ""]`.
pub(super) static DELIVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local run = redis.call('HMGET', KEYS[1], 'probe', 'track', 'finished')
        if not run[1] then return false end
        if ARGV[1] ~= '' and ARGV[1] ~= run[2] then return false end
        local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
        return {run[1], tostring(n), run[3] or ''}
        ",
    )
});

/// Notes when the run saw its job end, if the run still waits. KEYS: the run's hash. ARGV: ms.
pub(super) static FINISHED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'finished', ARGV[1]) end
        return 0
        ",
    )
});

/// Ends a run: its delivery count (0 when none came), and the hash deleted. KEYS: the run's hash.
pub(super) static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local n = redis.call('HGET', KEYS[1], 'n')
        redis.call('DEL', KEYS[1])
        return tonumber(n or '0')
        ",
    )
});
