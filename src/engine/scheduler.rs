//! The continuous-batching scheduler: one llama.cpp context, `parallel` sequences, one thread.
//!
//! Every step asks `batch::plan` what goes in the batch (the next token of each generating
//! sequence plus prompt chunks of newly admitted ones, up to `n_batch` tokens), executes that plan
//! against llama.cpp, decodes it once, and samples one token per sequence that produced logits.
//! New jobs are admitted between steps whenever a slot is free; a job whose client went away (its
//! event receiver dropped) frees its slot at the next step. Jobs wait in a bounded channel;
//! `Engine::submit` answers "overloaded" when it is full. When nothing runs, the thread blocks on
//! that channel; `Engine::shutdown` wakes it with [`Inbound::Wake`].
//!
//! A job with `n` choices waits (first in line) until `n` slots are free and takes them all: the
//! first slot decodes the prompt; the moment its last prompt token has logits, its KV cells are
//! copied to the other slots' sequences (`llama_memory_seq_cp`) and every choice samples its first
//! token from those same logits with its own sampler. The prompt is decoded once.
//!
//! Prefix reuse (`prefix`): a slot keeps its sequence's KV cells when its request ends, with the
//! tokens they hold. A new job takes the free slot sharing the longest prefix with its prompt;
//! only the cells after that prefix are removed (`llama_memory_seq_rm`) and only the rest of the
//! prompt is decoded. Where the model's memory refuses to drop a tail (recurrent models) or has
//! already dropped early cells (sliding-window attention), the sequence is cleared and the
//! prompt decoded whole. A failed decode clears the sequences it touched.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::{BatchAddError, LlamaBatch};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::UnboundedSender;

use super::batch::{self, Plan, SlotView, Tokens};
use super::model::Model;
use super::prefix::{self, Kept};
use super::request::{Event, FinishReason, GenerateRequest, TokenLogprob, TopLogprob, Usage};
use super::text::{StopMatcher, StopScan, Utf8Stream};
use super::{logprobs, Shared};

/// What the engine handle sends the scheduler thread.
pub(super) enum Inbound {
    Job(Job),
    /// Sent by `Engine::shutdown` (after setting the flag) so an idle scheduler notices at once.
    Wake,
}

/// A request handed to the scheduler, with one event channel and one sampler per choice
/// (built by `Engine::submit_choices`, so a bad grammar is refused before queueing).
pub(super) struct Job {
    pub req: GenerateRequest,
    pub choices: Vec<(UnboundedSender<Event>, LlamaSampler)>,
}

/// A sequence being served in one slot.
struct Active {
    events: UnboundedSender<Event>,
    /// The prompt to decode (empty for a choice that copies another slot's prompt cells).
    prompt: Vec<i32>,
    prompt_tokens: u32,
    /// For a choice after the first: the slot whose prompt cells it waits for.
    waiting_for: Option<usize>,
    /// For the first choice: the slots waiting for its prompt cells.
    siblings: Vec<usize>,
    /// Alternatives per token when the request asks for log-probabilities.
    logprobs: Option<u32>,
    /// Prompt tokens already decoded into the KV cache (from the start: those kept from the
    /// slot's previous request).
    prefilled: usize,
    /// Prompt tokens whose KV cells were kept from an earlier request (`usage.cached_tokens`).
    cached_tokens: u32,
    /// Next free position of this sequence in the KV cache.
    n_past: i32,
    sampler: LlamaSampler,
    /// The last sampled token, to be fed in the next step.
    next: Option<i32>,
    generated: u32,
    max_tokens: Option<u32>,
    utf8: Utf8Stream,
    stop: StopMatcher,
    /// Index in the current batch whose logits this sequence samples from.
    logits_at: Option<i32>,
}

impl Active {
    /// What this sequence has to decode, for the planner. A sequence with a sampled token has
    /// finished its prompt (the first token is sampled from the last prompt token's logits).
    fn view(&self) -> SlotView {
        if self.waiting_for.is_some() {
            SlotView::Idle
        } else if let Some(token) = self.next {
            SlotView::Generating {
                token,
                pos: self.n_past,
            }
        } else if self.prefilled < self.prompt.len() {
            SlotView::Prefilling {
                done: self.prefilled,
                len: self.prompt.len(),
                pos: self.n_past,
            }
        } else {
            SlotView::Idle
        }
    }
}

pub(super) struct Scheduler<'m> {
    model: &'m Model,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    /// Context length per sequence: prompt plus generated tokens never exceed it.
    ctx_per_seq: i32,
    slots: Vec<Option<Active>>,
    /// What each sequence's KV cells hold, busy or free (see `prefix`).
    kept: Vec<Kept>,
    /// Jobs admitted so far: the clock of `Kept::last_used`.
    admissions: u64,
    /// Whether free slots keep their cells for later requests (`EngineConfig::prefix_cache`).
    prefix_cache: bool,
    /// The next job, taken from the queue but waiting for as many free slots as it has choices.
    pending: Option<Job>,
    shared: Arc<Shared>,
}

impl<'m> Scheduler<'m> {
    pub fn new(
        model: &'m Model,
        ctx: LlamaContext<'m>,
        n_batch: usize,
        ctx_per_seq: u32,
        prefix_cache: bool,
        shared: Arc<Shared>,
    ) -> Self {
        let parallel = shared.parallel as usize;
        Self {
            model,
            ctx,
            batch: LlamaBatch::new(n_batch, 1),
            n_batch,
            ctx_per_seq: ctx_per_seq as i32,
            slots: (0..parallel).map(|_| None).collect(),
            kept: vec![Kept::default(); parallel],
            admissions: 0,
            prefix_cache,
            pending: None,
            shared,
        }
    }

    /// Runs until shutdown is requested or every job sender is gone.
    pub fn run(mut self, inbox: Receiver<Inbound>) {
        'run: loop {
            if self.shared.shutdown.load(Ordering::SeqCst) {
                self.abort_all(&inbox, "server shutting down");
                return;
            }
            self.drop_cancelled();
            loop {
                if self.pending.is_none() {
                    if self.free_slots() == 0 {
                        break;
                    }
                    match inbox.try_recv() {
                        Ok(Inbound::Job(job)) => self.pending = Some(job),
                        Ok(Inbound::Wake) => continue 'run,
                        Err(_) => break,
                    }
                }
                let need = self.pending.as_ref().map_or(0, |j| j.choices.len());
                if need > self.free_slots() {
                    break; // first in line: waits for enough slots
                }
                if let Some(job) = self.pending.take() {
                    self.admit(job);
                }
            }
            if self.slots.iter().all(Option::is_none) && self.pending.is_none() {
                // Nothing runs: block until a job comes, shutdown wakes us, or the engine is gone.
                match inbox.recv() {
                    Ok(Inbound::Job(job)) => self.pending = Some(job),
                    Ok(Inbound::Wake) => {}
                    Err(_) => return,
                }
                continue;
            }
            self.step();
        }
    }

    fn free_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.is_none()).count()
    }

    /// Puts a job's choices into free slots (the caller checked there are enough).
    fn admit(&mut self, job: Job) {
        self.shared.stats.queue_len.fetch_sub(1, Ordering::Relaxed);
        if job.choices.iter().all(|(events, _)| events.is_closed()) {
            return; // client left while queued
        }
        let free: Vec<(usize, &Kept)> = (0..self.slots.len())
            .filter(|&i| self.slots[i].is_none())
            .map(|i| (i, &self.kept[i]))
            .collect();
        let Some(free) = prefix::choose(&free, &job.req.prompt, job.choices.len()) else {
            return;
        };
        let first = free[0];
        let req = job.req;
        let prompt_tokens = req.prompt.len() as u32;
        self.admissions += 1;
        for &slot in &free {
            self.kept[slot].last_used = self.admissions;
        }
        // The first choice keeps the cells of the prefix it shares; the others get a copy of
        // its cells once its prompt is decoded.
        let reused = self.keep_prefix(first, &req.prompt);
        for &slot in &free[1..] {
            self.clear_seq(slot);
        }
        self.shared
            .stats
            .prompt_tokens_cached
            .fetch_add(reused as u64, Ordering::Relaxed);
        let mut prompt = Some(req.prompt);
        for ((events, sampler), &slot) in job.choices.into_iter().zip(&free) {
            let is_first = slot == first;
            self.slots[slot] = Some(Active {
                events,
                prompt: prompt.take().unwrap_or_default(),
                prompt_tokens,
                cached_tokens: reused as u32,
                waiting_for: (!is_first).then_some(first),
                siblings: if is_first {
                    free[1..].to_vec()
                } else {
                    Vec::new()
                },
                logprobs: req.logprobs,
                sampler,
                prefilled: if is_first { reused } else { 0 },
                n_past: if is_first { reused as i32 } else { 0 },
                next: None,
                generated: 0,
                max_tokens: req.max_tokens,
                utf8: Utf8Stream::default(),
                stop: StopMatcher::new(req.stop.clone()),
                logits_at: None,
            });
        }
        self.update_busy();
    }

    /// Keeps the KV cells of `seq` that hold a prefix of `prompt` and removes the rest; returns
    /// how many prompt tokens are kept (0: the sequence is now empty). Falls back to clearing the
    /// whole sequence when the memory cannot remove a tail or no longer holds the prefix whole.
    fn keep_prefix(&mut self, seq: usize, prompt: &[i32]) -> usize {
        let n = if self.prefix_cache {
            prefix::reusable(&self.kept[seq].tokens, prompt)
        } else {
            0
        };
        if n == 0 {
            self.clear_seq(seq);
            return 0;
        }
        let removed = self
            .ctx
            .clear_kv_cache_seq(Some(seq as u32), Some(n as u32), None);
        // Positions 0..n must all still be there: a sliding-window cache drops early cells.
        let whole = self.ctx.kv_cache_seq_pos_min(seq as i32) == 0
            && self.ctx.kv_cache_seq_pos_max(seq as i32) == n as i32 - 1;
        if !matches!(removed, Ok(true)) || !whole {
            tracing::debug!(
                seq,
                n,
                ?removed,
                "cannot keep a prefix; decoding the prompt whole"
            );
            self.clear_seq(seq);
            return 0;
        }
        self.kept[seq].tokens.truncate(n);
        n
    }

    /// Empties a sequence's KV cells.
    fn clear_seq(&mut self, seq: usize) {
        if let Err(e) = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None) {
            tracing::error!("clearing KV cache of sequence {seq}: {e}");
        }
        self.kept[seq].tokens.clear();
    }

    /// After a decode: each first choice whose prompt just got its logits hands its KV cells and
    /// logits to the choices waiting for it.
    fn share_prompts(&mut self) {
        for p in 0..self.slots.len() {
            let Some(a) = self.slots[p].as_mut() else {
                continue;
            };
            let Some(at) = a.logits_at.filter(|_| !a.siblings.is_empty()) else {
                continue;
            };
            let (siblings, n_past) = (std::mem::take(&mut a.siblings), a.n_past);
            for s in siblings {
                let waiting = self.slots[s]
                    .as_ref()
                    .is_some_and(|w| w.waiting_for == Some(p));
                if !waiting {
                    continue; // that choice's client left
                }
                if let Err(e) = self.ctx.copy_kv_cache_seq(p as i32, s as i32, None, None) {
                    self.fail(s, &format!("copying the prompt's KV cells failed: {e}"));
                    continue;
                }
                self.kept[s].tokens = self.kept[p].tokens.clone();
                if let Some(w) = self.slots[s].as_mut() {
                    w.waiting_for = None;
                    w.n_past = n_past;
                    w.logits_at = Some(at);
                }
            }
        }
    }

    /// One decode step over every active sequence.
    fn step(&mut self) {
        let views: Vec<SlotView> = self
            .slots
            .iter()
            .map(|s| s.as_ref().map_or(SlotView::Idle, Active::view))
            .collect();
        let plan = batch::plan(&views, self.n_batch);
        debug_assert!(plan.n_tokens() <= self.n_batch);
        for a in self.slots.iter_mut().flatten() {
            a.logits_at = None;
        }
        if plan.is_empty() {
            return;
        }
        if let Err(e) = self.execute(&plan) {
            // Cannot happen (the plan fits the batch); if it does, the sequences' state is
            // half-advanced: end them all, as for a decode error.
            tracing::error!("building the batch failed: {e}");
            for seq in 0..self.slots.len() {
                self.fail(seq, &format!("batch failed: {e}"));
            }
            return;
        }
        let started = Instant::now();
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            tracing::error!("llama.cpp decode failed: {e}");
            // The KV state of every sequence in the batch is now unknown: end them all.
            for seq in 0..self.slots.len() {
                self.fail(seq, &format!("decode failed: {e}"));
            }
            return;
        }
        self.share_prompts();
        let mut sampled = Vec::with_capacity(self.slots.len());
        for (seq, slot) in self.slots.iter_mut().enumerate() {
            if let Some(a) = slot {
                if let Some(at) = a.logits_at {
                    let tok = a.sampler.sample(&self.ctx, at).0;
                    // The same logits the sampler started from, before it changed its copy.
                    let lp = a.logprobs.map(|k| {
                        let logits = self.ctx.get_logits_ith(at);
                        logprobs::compute(logits, tok, k as usize)
                    });
                    sampled.push((seq, tok, lp));
                }
            }
        }
        // Count before answering, so a client that reads /api/status after its answer sees it.
        let busy = started.elapsed();
        self.shared
            .stats
            .record_step(sampled.len() as u64, busy, plan.prefills());
        for (seq, tok, lp) in sampled {
            self.on_token(seq, tok, lp);
        }
    }

    /// Fills the llama.cpp batch with `plan` and advances each planned sequence: its KV
    /// position, its prefill progress, and where in the batch its logits will be.
    fn execute(&mut self, plan: &Plan) -> Result<(), BatchAddError> {
        self.batch.clear();
        let mut n = 0usize;
        for e in &plan.entries {
            let a = self.slots[e.seq].as_mut().expect("planned slot is active");
            let seq_ids = [e.seq as i32];
            match &e.tokens {
                Tokens::Sampled(tok) => {
                    self.batch
                        .add(LlamaToken(*tok), e.pos, &seq_ids, e.logits)?;
                    self.kept[e.seq].tokens.push(*tok);
                    a.next = None;
                }
                Tokens::Prompt(range) => {
                    for (i, &tok) in a.prompt[range.clone()].iter().enumerate() {
                        let logits = e.logits && range.start + i + 1 == range.end;
                        self.batch
                            .add(LlamaToken(tok), e.pos + i as i32, &seq_ids, logits)?;
                    }
                    self.kept[e.seq]
                        .tokens
                        .extend_from_slice(&a.prompt[range.clone()]);
                    a.prefilled = range.end;
                    // Counted as decoded (not as submitted): `n` choices decode one prompt.
                    self.shared
                        .stats
                        .prompt_tokens
                        .fetch_add(range.len() as u64, Ordering::Relaxed);
                }
            }
            n += e.len();
            a.n_past = e.pos + e.len() as i32;
            if e.logits {
                a.logits_at = Some(n as i32 - 1);
            }
        }
        Ok(())
    }

    /// Handles a sampled token: end of generation, text, stop strings, limits.
    fn on_token(&mut self, seq: usize, tok: i32, lp: Option<(f32, Vec<(i32, f32)>)>) {
        if self.model.is_end_of_generation(tok) {
            return self.finish(seq, FinishReason::Stop, true);
        }
        let bytes = self.model.token_bytes(tok);
        let a = self.slots[seq].as_mut().expect("active slot");
        if let Some((logprob, top)) = lp {
            let top = top
                .into_iter()
                .map(|(t, logprob)| TopLogprob {
                    bytes: self.model.token_bytes(t),
                    logprob,
                })
                .collect();
            let _ = a.events.send(Event::Logprob(TokenLogprob {
                bytes: bytes.clone(),
                logprob,
                top,
            }));
        }
        a.generated += 1;
        let text = a.utf8.push(&bytes);
        match a.stop.push(&text) {
            StopScan::Stopped(text) => {
                send_text(&a.events, text);
                return self.finish(seq, FinishReason::Stop, false);
            }
            StopScan::Continue(text) => send_text(&a.events, text),
        }
        // The new token would take position `n_past`: prompt plus completion never exceed the context.
        if a.max_tokens.is_some_and(|m| a.generated >= m) || a.n_past + 1 >= self.ctx_per_seq {
            return self.finish(seq, FinishReason::Length, true);
        }
        a.next = Some(tok);
    }

    /// Ends a sequence normally: flushes held text, sends usage, frees the slot.
    fn finish(&mut self, seq: usize, finish: FinishReason, flush: bool) {
        let Some(mut a) = self.slots[seq].take() else {
            return;
        };
        if flush {
            let rest = a.utf8.finish();
            let mut tail = match a.stop.push(&rest) {
                StopScan::Continue(t) | StopScan::Stopped(t) => t,
            };
            tail.push_str(&a.stop.finish());
            send_text(&a.events, tail);
        }
        let usage = Usage {
            prompt_tokens: a.prompt_tokens,
            completion_tokens: a.generated,
            cached_tokens: a.cached_tokens,
        };
        // Count and free the slot before answering, so a client that reads /api/status after
        // its answer sees both.
        self.shared
            .stats
            .requests_served
            .fetch_add(1, Ordering::Relaxed);
        self.free(seq, true);
        let _ = a.events.send(Event::Done { finish, usage });
    }

    fn fail(&mut self, seq: usize, message: &str) {
        if let Some(a) = self.free(seq, false) {
            let _ = a.events.send(Event::Error(message.to_owned()));
        }
    }

    /// Empties a slot; hands back what it held. Its KV cells stay for a later request with the
    /// same prefix when `keep` (they hold exactly the tokens decoded) and prefix reuse is on.
    fn free(&mut self, seq: usize, keep: bool) -> Option<Active> {
        let mut gone = self.slots[seq].take();
        // Choices still waiting for this prompt's cells will never get them.
        let siblings = gone.as_mut().map(|a| std::mem::take(&mut a.siblings));
        for s in siblings.unwrap_or_default() {
            if self.slots[s]
                .as_ref()
                .is_some_and(|w| w.waiting_for == Some(seq))
            {
                self.fail(s, "the choice decoding the prompt ended");
            }
        }
        if !(keep && self.prefix_cache) {
            self.clear_seq(seq);
        }
        self.update_busy();
        gone
    }

    fn drop_cancelled(&mut self) {
        for seq in 0..self.slots.len() {
            if self.slots[seq]
                .as_ref()
                .is_some_and(|a| a.events.is_closed())
            {
                tracing::debug!(seq, "client went away; freeing slot");
                // What it decoded is sound: a next turn of the same chat may use it.
                self.free(seq, true);
            }
        }
    }

    /// Shutdown: every running and queued request ends with an error event.
    fn abort_all(&mut self, inbox: &Receiver<Inbound>, message: &str) {
        for seq in 0..self.slots.len() {
            self.fail(seq, message);
        }
        if let Some(job) = self.pending.take() {
            self.shared.stats.queue_len.fetch_sub(1, Ordering::Relaxed);
            for (events, _) in job.choices {
                let _ = events.send(Event::Error(message.to_owned()));
            }
        }
        while let Ok(msg) = inbox.try_recv() {
            if let Inbound::Job(job) = msg {
                self.shared.stats.queue_len.fetch_sub(1, Ordering::Relaxed);
                for (events, _) in job.choices {
                    let _ = events.send(Event::Error(message.to_owned()));
                }
            }
        }
    }

    fn update_busy(&self) {
        let busy = self.slots.iter().filter(|s| s.is_some()).count();
        self.shared.stats.slots_busy.store(busy, Ordering::Relaxed);
    }
}

fn send_text(events: &UnboundedSender<Event>, text: String) {
    if !text.is_empty() {
        let _ = events.send(Event::Text(text));
    }
}
