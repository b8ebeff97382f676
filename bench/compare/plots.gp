# bench/compare plots: gnuplot -e "tsv='results.tsv'" plots.gp, run in the results folder
# (run.sh does it). Reads plot-qps.dat and plot-lat.dat written by summarize.py report.
set terminal pngcairo size 900,520 font ",10"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set key top right autotitle columnhead
set grid ytics
set boxwidth 0.9

set output 'qps.png'
set title "Answered queries per second, server on CPU 1, generator (kxdpgun or dnsperf) on CPU 0"
set ylabel "NOERROR answers / s"
set yrange [0:*]
plot 'plot-qps.dat' using 2:xtic(1) title 'cache-warm, kxdpgun', '' using 3 title 'cache-warm, dnsperf', \
     '' using 4 title 'mix 95% hits', '' using 5 title 'miss-heavy (capped)'

set output 'latency.png'
set title "Latency, cache-warm set, same fixed offered rate for every server (dnsperf -v)"
set ylabel "ms"
set logscale y
set yrange [*:*]
plot 'plot-lat.dat' using 2:xtic(1) title 'p50', '' using 3 title 'p99', '' using 4 title 'p99.9'
