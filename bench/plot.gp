# bench/plot.gp: the chart of bench/run.sh, from the data files report.py writes.
#   gnuplot -e "dir='DATA_DIR'; out='latest.png'" bench/plot.gp
set terminal pngcairo size 1600,1600 font "sans,10"
set output out
set multiplot layout 3,2 title "Parley against the floor (a relay with no storage) and mosquitto (an MQTT broker, QoS 1, in memory), same machine, same settings"
set grid
set key top left
set rmargin 6
set yrange [0:*]
set style data linespoints
set format y "%.0s%c"

set title "direct: messages delivered per second, 8 in flight per sender"
set logscale x
set xlabel "connections (users, in pairs)"
set ylabel "messages/s"
plot dir.'/direct.dat' using 1:2 lw 2 pt 7 title 'Parley', \
     '' using 1:3 lw 2 pt 5 title 'floor'

set title "group: deliveries per second (one message reaches M-1 members)"
set xlabel "group size M"
set ylabel "deliveries/s"
plot dir.'/group.dat' using 1:2 lw 2 pt 7 title 'Parley', \
     '' using 1:3 lw 2 pt 5 title 'floor'

set title "latency distribution at an offered rate (send to receipt)"
set logscale xy
set yrange [*:*]
set xrange [1:*]
set format y "%g"
set xlabel "percentile"
set ylabel "latency (ms)"
set xtics ("50%%" 2, "90%%" 10, "99%%" 100, "99.9%%" 1000, "99.99%%" 10000)
set key top left
load dir.'/lat.gp'

set title "server CPU time per delivered message (user + system, in the measured window)"
unset logscale
set autoscale x
set yrange [0:*]
set format y "%g"
set xtics auto rotate by -35 left font ",8"
set xlabel ""
set ylabel "microseconds per message"
set bmargin 9
set key top right
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.6
plot dir.'/cpu.dat' using 2:xtic(1) title 'floor', \
     '' using 3 title 'mosquitto', \
     '' using 4 title 'Parley'
set style data linespoints

set title "Parley / floor (throughput: below 1 is slower; latency, memory: above 1 is more)"
unset logscale x
set xrange [-0.6:*]
set bmargin 9
set rmargin 12
set logscale y
set format y "%g"
set xlabel ""
set ylabel "ratio"
set xtics rotate by -35 left font ",8"
set style fill solid 0.6
set boxwidth 0.7
set yrange [*:*]
set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2
plot dir.'/ratios.dat' using 0:2:xtic(1) with boxes notitle

set title "Parley / mosquitto (issue 15; points: its targets, at least for msg/s, at most for the rest)"
set key top right
plot dir.'/ratios_mq.dat' using 0:2:xtic(1) with boxes notitle, \
     '' using 0:3 with points pt 9 ps 2 lc rgb "black" title 'target'

unset multiplot
